"""The legacy layout's writer: one JSON file per run (see :mod:`efsray.store.results.legacy`).

efsray no longer writes this layout for users (``ResultStore.save`` commits to the results
table); the writer stays so that tests and drills can make stores as older efsray did, for
the readers and for ``efsray results migrate``.
"""

from __future__ import annotations

import base64
import errno
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efsray.errors import CommitConflictError, InvalidDataError, NotFoundError, StorageError
from efsray.store import jsonsafe
from efsray.store.hashing import split_digest
from efsray.store.ids import id_time, is_id
from efsray.store.names import validate_name
from efsray.store.nfs import create_exclusive, write_new
from efsray.store.results.legacy import (
    _HOST,
    _ID_ATTEMPTS,
    _SAME_ID_ATTEMPTS,
    MAX_RUN_JSON_BYTES,
    LegacyRuns,
    _check_id,
    log,
)
from efsray.store.results.legacy_files import (
    _decode_table,
    _digest,
    _read_record,
    _run_info,
    _table_bytes,
    _unlink_all,
)
from efsray.store.results.records import RunInfo, RunSpec, make_record
from efsray.store.results.records import comparable as _comparable
from efsray.store.results.records import to_arrow as _to_arrow

__all__ = ["LegacyWriter"]


class LegacyWriter(LegacyRuns):
    """:class:`LegacyRuns` that can also save runs in the legacy layout."""

    # --- saving --------------------------------------------------------------------------

    def save(
        self,
        strategy: str,
        *,
        metrics: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        equity_curve: Any = None,
        trades: Any = None,
        data_versions: Any = None,
        tags: Mapping[str, Any] | None = None,
        extra: Mapping[str, Any] | None = None,
        run_id: str | None = None,
    ) -> RunInfo:
        """Store one run. Everything is validated before anything is written.

        ``metrics``: name -> number (NaN and infinity allowed). ``params``, ``tags``,
        ``extra``: JSON-safe dicts. ``equity_curve`` and ``trades``: pandas or polars
        DataFrames, pandas Series, or Arrow tables (embedded in the JSON as Arrow IPC when
        small, else Parquet files). ``data_versions``: the market data the run read, as
        {"AAPL/1m": 12} or CommitInfo/SeriesInfo objects.

        ``run_id``: an id of the caller's choosing (see :func:`efsray.store.ids.derive`).
        Saving is then idempotent: if that run exists with the same record (who wrote it
        and when aside), the stored run is returned and nothing is written; if it exists
        with another record, :class:`InvalidDataError` says so. Without ``run_id`` a new
        id is drawn.
        """
        validate_name("strategy id", strategy)
        if run_id is not None:
            _check_id(run_id)
        spec = RunSpec(metrics, params, equity_curve, trades, data_versions, tags, extra, run_id)
        record = make_record(strategy, spec)
        given = (("equity_curve", equity_curve), ("trades", trades))
        tables = [
            _encode_table(name, value, self.algorithm, self.inline_max_bytes)
            for name, value in given
            if value is not None
        ]
        if run_id is not None:
            return self._save_as(strategy, run_id, record, tables)
        for _ in range(_ID_ATTEMPTS):
            drawn = self._new_id()
            if not is_id(drawn):
                raise InvalidDataError(f"id_factory returned {drawn!r}, which is not an id")
            try:
                return self._commit(strategy, drawn, record, tables)
            except FileExistsError:
                log.warning("run id %s of %s was taken; drawing another", drawn, strategy)
        raise InvalidDataError(
            f"could not find a free run id in {_ID_ATTEMPTS} attempts; the id_factory "
            "keeps returning ids that exist"
        )

    def _save_as(
        self, strategy: str, run_id: str, record: dict[str, Any], tables: list[_Table]
    ) -> RunInfo:
        """Create run ``run_id``, or return the stored one if it holds the same record."""
        for _ in range(_SAME_ID_ATTEMPTS):
            try:
                return self._commit(strategy, run_id, record, tables)
            except FileExistsError:
                pass
            path = self._run_dir(strategy, run_id) / f"{run_id}.json"
            try:
                stored = _read_record(path)
            except NotFoundError:
                continue  # removed (by retention) between our link() and this read: again
            self._check_same(path, stored, record, tables)
            log.debug("run %s of %s already saved with the same record", run_id, strategy)
            return _run_info(stored, path)
        raise CommitConflictError(
            f"run {run_id} of {strategy} kept appearing and disappearing while it was saved "
            f"({_SAME_ID_ATTEMPTS} times); is a cleanup with a zero grace period running? "
            "Retry the save"
        )

    def _commit(
        self, strategy: str, run_id: str, record: dict[str, Any], tables: list[_Table]
    ) -> RunInfo:
        """Write run ``run_id``: big tables, then the JSON (the commit point).

        FileExistsError if the run's JSON exists (this writer's table files are removed).
        """
        directory = self._run_dir(strategy, run_id)
        try:
            return self._write_run(directory, run_id, record, tables)
        except StorageError as exc:
            if exc.errno != errno.ENOENT or directory not in self._dirs:
                raise
            # The directory we made earlier was removed (retention removes empty old
            # directories): make it again, once.
            self._dirs.discard(directory)
            return self._write_run(directory, run_id, record, tables)

    def _write_run(
        self, directory: Path, run_id: str, record: dict[str, Any], tables: list[_Table]
    ) -> RunInfo:
        self._ensure_dir(directory)
        created: list[Path] = []
        try:
            entries: dict[str, Any] = {}
            for table in tables:
                entry: dict[str, Any] = {
                    "rows": table.rows, "bytes": len(table.data), "digest": table.digest,
                }  # fmt: skip
                if table.inline:
                    entry["format"] = "arrow-ipc"
                    entry["inline"] = base64.b64encode(table.data).decode("ascii")
                else:
                    # A unique name: a dead attempt's file (same run id) never blocks a retry.
                    path = directory / f"{run_id}.{table.name}.{secrets.token_hex(4)}.parquet"
                    write_new(path, table.data)  # no reader knows it until the JSON names it
                    created.append(path)
                    entry["file"] = path.name
                entries[table.name] = entry
            full = {
                **record,
                "tables": entries,
                "run_id": run_id,
                "created_at": id_time(run_id).isoformat(),
                "writer": {"host": _HOST, "pid": os.getpid()},
            }
            raw = jsonsafe.dumps(full)
            if len(raw) > MAX_RUN_JSON_BYTES:
                raise InvalidDataError(
                    f"the run's JSON is {len(raw)} bytes, more than {MAX_RUN_JSON_BYTES}; "
                    "put bulky data in equity_curve or trades (Parquet)"
                )
            path = directory / f"{run_id}.json"
            create_exclusive(path, raw)
        except BaseException:
            _unlink_all(created)
            raise
        return _run_info(full, path)

    def _check_same(
        self, path: Path, stored: dict[str, Any], record: dict[str, Any], tables: list[_Table]
    ) -> None:
        """Raise InvalidDataError unless ``stored`` (read from ``path``) is the run that
        ``record`` and ``tables`` describe."""
        run_id = stored["run_id"]
        old, new = _comparable(stored), _comparable(record)
        differ = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        stored_tables = stored.get("tables") or {}
        new_tables = {t.name: t for t in tables}
        if set(stored_tables) != set(new_tables):
            differ.append("tables")
        else:
            for name, table in new_tables.items():
                if not self._same_table(path, run_id, name, stored_tables[name], table):
                    differ.append(name)
        if differ:
            raise InvalidDataError(
                f"run {run_id} of {stored.get('strategy')} already exists ({path}) with a "
                f"different {', '.join(differ)}; a chosen run id must name exactly one "
                "result: derive it from everything that determines the result, or save "
                "without run_id to get a new run"
            )

    def _same_table(
        self, path: Path, run_id: str, name: str, entry: Mapping[str, Any], table: _Table
    ) -> bool:
        if entry.get("rows") != table.rows:
            return False
        digest = str(entry.get("digest"))
        algorithm, _ = split_digest(digest)
        if len(table.data) == entry.get("bytes") and _digest(table.data, algorithm) == digest:
            return True
        # Other bytes can hold the same table (embedded or not, another Arrow or Parquet
        # writer version): compare the data.
        stored = _decode_table(path, run_id, name, entry, _table_bytes(path, run_id, name, entry))
        fresh = _decode_table(path, run_id, name, table.entry(), table.data)
        return bool(stored.equals(fresh, check_metadata=False))


@dataclass(frozen=True, slots=True)
class _Table:
    """A table ready to store: embedded (Arrow IPC stream) or a file (Parquet)."""

    name: str
    data: bytes
    rows: int
    digest: str
    inline: bool

    def entry(self) -> dict[str, Any]:
        return {"format": "arrow-ipc"} if self.inline else {}


def _encode_table(name: str, value: Any, algorithm: str, inline_max: int) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = _to_arrow(name, value)
    if table.nbytes <= inline_max:
        # Embedded: an Arrow IPC stream, uncompressed. A 250-row equity curve takes ~10 us
        # to write and ~12 us to read this way, where Parquet takes ~130 us and ~560 us: a
        # sweep saves one per backtest (Parquet's encodings pay off on big tables only).
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        data = bytes(sink.getvalue().to_pybytes())
        if len(data) <= inline_max:
            return _Table(name, data, table.num_rows, _digest(data, algorithm), True)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = bytes(sink.getvalue().to_pybytes())
    return _Table(name, data, table.num_rows, _digest(data, algorithm), False)
