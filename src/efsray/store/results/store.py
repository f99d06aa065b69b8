"""``store.results``: backtest runs, saved in batches into one columnar table per strategy.

Writes go to the table (:mod:`efsray.store.results.table`); every read also covers the
legacy one-file-per-run layout (:mod:`efsray.store.results.legacy`) of stores written before
it, until ``efsray results migrate`` has moved those runs into the table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from efsray.errors import InvalidDataError, NotFoundError
from efsray.store import jsonsafe
from efsray.store.hashing import DEFAULT_ALGORITHM, new_hasher
from efsray.store.ids import MonotonicIds, id_time, is_id
from efsray.store.layout import StoreLayout
from efsray.store.names import is_valid_name, validate_name
from efsray.store.nfs import ManifestCache, kind_of, list_subdirs
from efsray.store.results.format import PreparedRun, encode_table
from efsray.store.results.legacy import INLINE_MAX_BYTES
from efsray.store.results.legacy_write import LegacyWriter
from efsray.store.results.query import assemble, table_frames
from efsray.store.results.records import (
    BacktestRun,
    RunInfo,
    RunSpec,
    check_id,
    make_record,
    run_info,
    to_arrow,
)
from efsray.store.results.records import to_datetime as _to_dt
from efsray.store.results.table import ROW_COLUMNS, ResultTable
from efsray.store.results.where import parse_filters

__all__ = ["ResultStore"]

log = logging.getLogger("efsray.store")

# seconds a superseded version of a table stays for its readers (``vacuum``): a query or a
# load by id takes well under a second, even on EFS; the cleanup's grace is longer (an hour)
VACUUM_GRACE_S = 600.0

_UTC_MS = pa.timestamp("ms", tz="UTC")
_ID_ATTEMPTS = 16


class ResultStore:
    """Backtest runs under ``layout.results``.

    ``id_factory`` makes run ids when the caller does not choose one (default: a
    :class:`efsray.store.ids.MonotonicIds`); ``algorithm``: the checksum of new files
    (default xxh3-128); ``merge``: merge small segments after each commit (default True);
    ``inline_max_bytes`` and ``clock`` configure the legacy writer only.
    """

    def __init__(
        self,
        layout: StoreLayout,
        *,
        id_factory: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.time,
        algorithm: str | None = None,
        inline_max_bytes: int = INLINE_MAX_BYTES,
        merge: bool = True,
    ) -> None:
        self.layout = layout
        self.algorithm = algorithm or DEFAULT_ALGORITHM
        new_hasher(self.algorithm)
        self.legacy = LegacyWriter(
            layout, clock=clock, algorithm=self.algorithm, inline_max_bytes=inline_max_bytes
        )
        self._new_id = id_factory or MonotonicIds()
        self._cache = ManifestCache()
        self._tables: dict[str, ResultTable] = {}
        self._legacy: dict[str, bool] = {}
        self.merge_after_commit = merge

    # --- where things are -------------------------------------------------------------------

    @property
    def tables_root(self) -> Path:
        return self.layout.results / "tables"

    def table(self, strategy: str) -> ResultTable:
        """The results table of ``strategy`` (nothing is read or created)."""
        validate_name("strategy id", strategy)
        found = self._tables.get(strategy)
        if found is None:
            found = ResultTable(
                self.tables_root / strategy, strategy, cache=self._cache, algorithm=self.algorithm
            )
            self._tables[strategy] = found
        return found

    def _has_legacy(self, strategy: str) -> bool:
        known = self._legacy.get(strategy)
        if known is None:
            known = kind_of(self.layout.backtests / strategy) == "dir"
            self._legacy[strategy] = known
        return known

    def run_path(self, strategy: str, run_id: str) -> Path:
        """Where the legacy layout keeps (or kept) run ``run_id`` of ``strategy``."""
        return self.legacy.run_path(strategy, run_id)

    def strategies(self) -> list[str]:
        """Strategies with runs, in either layout (a listing: may lag other hosts by ~a
        minute)."""
        names = {n for n in list_subdirs(self.tables_root) if is_valid_name(n)}
        return sorted(names | set(self.legacy.strategies()))

    def files(self, strategy: str, *, version: int | None = None) -> list[Path]:
        """Exactly the Parquet segments of ``version`` (default: the latest) of the table of
        ``strategy``: what DuckDB's ``read_parquet``, polars or pyarrow should read."""
        table = self.table(strategy)
        manifest = table.manifest(version)
        return [] if manifest is None else [table.data / s.name for s in manifest.segments]

    def version(self, strategy: str) -> int:
        """The latest version of the table of ``strategy`` (0: nothing committed)."""
        manifest = self.table(strategy).manifest()
        return 0 if manifest is None else manifest.version

    # --- saving -----------------------------------------------------------------------------

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
        """Store one run (a batch of one: :meth:`save_batch`).

        ``metrics``: name -> number (NaN and infinity allowed). ``params``, ``tags``,
        ``extra``: JSON-safe dicts. ``equity_curve`` and ``trades``: pandas or polars
        DataFrames, pandas Series, or Arrow tables. ``data_versions``: the market data the
        run read, as {"AAPL/1m": 12} or CommitInfo/SeriesInfo objects. ``run_id``: an id of
        the caller's choosing (see :func:`efsray.store.ids.derive`): saving is then
        idempotent (the same run again returns the stored one; a different run under that
        id raises InvalidDataError). Without it a new id is drawn.
        """
        spec = RunSpec(metrics, params, equity_curve, trades, data_versions, tags, extra, run_id)
        return self.save_batch(strategy, [spec])[0]

    def save_batch(
        self, strategy: str, runs: Iterable[RunSpec | Mapping[str, Any]]
    ) -> list[RunInfo]:
        """Store ``runs`` (:class:`RunSpec` or dicts of :meth:`save`'s arguments) as one
        segment, in one commit; returns their infos in order. Everything is validated before
        anything is written. Runs with a chosen ``run_id`` are idempotent as in :meth:`save`,
        so a retried batch commits only what its killed attempt did not."""
        validate_name("strategy id", strategy)
        prepared: list[PreparedRun] = []
        chosen: set[str] = set()
        for item in runs:
            spec = item if isinstance(item, RunSpec) else _spec(item)
            record = make_record(strategy, spec)
            tables = {
                name: encode_table(name, to_arrow(name, value), self.algorithm)
                for name, value in (("equity_curve", spec.equity_curve), ("trades", spec.trades))
                if value is not None
            }
            if spec.run_id is not None:
                run_id = check_id(spec.run_id)
                chosen.add(run_id)
            else:
                run_id = self._new_id()
                if not is_id(run_id):
                    raise InvalidDataError(f"id_factory returned {run_id!r}, which is not an id")
            prepared.append(PreparedRun(run_id, record, tables))
        ids = [r.run_id for r in prepared]
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise InvalidDataError(f"the batch holds run ids {', '.join(twice[:3])} twice")
        if not prepared:
            return []
        infos: dict[str, RunInfo] = {}
        if chosen and self._has_legacy(strategy):
            for run_id, info in self.legacy.infos(strategy, chosen).items():
                mine = next(r for r in prepared if r.run_id == run_id)
                _check_legacy_same(info, mine)
                infos[run_id] = info
        table = self.table(strategy)
        todo = [r for r in prepared if r.run_id not in infos]
        by_id = {r.run_id: r for r in prepared}
        committed: list[str] = []
        for _ in range(_ID_ATTEMPTS):
            done, stored, taken = table.commit(todo, chosen=chosen)
            committed += done
            for run_id, row in stored.items():
                infos[run_id] = self._row_info(table, row)
            if not taken:
                break
            todo = []
            for old in sorted(taken):  # a drawn id that exists: draw another
                log.warning("run id %s of %s was taken; drawing another", old, strategy)
                run = by_id.pop(old)
                fresh = self._new_id()
                if not is_id(fresh):
                    raise InvalidDataError(f"id_factory returned {fresh!r}, which is not an id")
                by_id[fresh] = PreparedRun(fresh, run.record, run.tables)
                ids[ids.index(old)] = fresh
                todo.append(by_id[fresh])
        else:
            raise InvalidDataError(
                f"could not find a free run id in {_ID_ATTEMPTS} attempts; the id_factory "
                "keeps returning ids that exist"
            )
        writer = _writer()
        for run_id in committed:
            run = by_id[run_id]
            infos[run_id] = run_info(
                run.record, run_id=run_id, created_at=id_time(run_id),
                path=str(table.directory), tables=run.tables, writer=writer,
            )  # fmt: skip
        if committed and self.merge_after_commit:
            try:
                table.merge()
            except Exception as exc:  # noqa: BLE001 - the batch is committed; merge later
                log.warning("results table %s: merging after a commit failed: %s", strategy, exc)
        return [infos[i] for i in ids]

    def vacuum(
        self, strategy: str, *, grace: float = VACUUM_GRACE_S, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove the versions of ``strategy``'s table superseded more than ``grace``
        seconds ago and the merged-away segments only they name (see
        :meth:`ResultTable.vacuum`): a table written in thousands of batches keeps a few
        hundred files instead of three per batch. Returns (files, bytes)."""
        validate_name("strategy id", strategy)
        if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
            raise InvalidDataError(f"grace must be a number of seconds >= 0, got {grace!r}")
        return self.table(strategy).vacuum(time.time() - grace, dry_run=dry_run)

    def merge(self, strategy: str) -> int:
        """Merge the small segments of ``strategy``'s table now; returns the merges done."""
        return self.table(strategy).merge(max_merges=1000)

    # --- reading one run --------------------------------------------------------------------

    @staticmethod
    def _row_info(table: ResultTable, row: Mapping[str, Any]) -> RunInfo:
        record = jsonsafe.loads(str(row["record"]).encode())
        return run_info(
            record, run_id=str(row["run_id"]), created_at=id_time(str(row["run_id"])),
            path=str(table.directory), writer=str(row.get("writer") or "?:?"),
            tables=[t for t in str(row.get("tables") or "").split(",") if t],
        )  # fmt: skip

    def _locate(
        self, run_id: str, strategy: str | None, *, tables: bool = False
    ) -> tuple[ResultTable, dict[str, Any]] | tuple[None, str]:
        """(table, stored row) or (None, strategy) for a run in the legacy layout; with
        ``tables``, the row carries its tables' bytes where the run index could read them
        in the same open (:meth:`ResultTable.rows`)."""
        check_id(run_id)
        names = [validate_name("strategy id", strategy)] if strategy else self.strategies()
        found: list[tuple[ResultTable, dict[str, Any]] | tuple[None, str]] = []
        for name in names:
            table = self.table(name)
            row = table.find(run_id, tables=tables)
            if row is not None:
                found.append((table, row))
            elif self._has_legacy(name) and (
                strategy or kind_of(self.legacy.run_path(name, run_id)) == "file"
            ):
                found.append((None, name))
        if len(found) > 1:
            raise InvalidDataError(
                f"run id {run_id} exists for strategies "
                f"{', '.join(t.strategy if t else str(r) for t, r in found)}: give the strategy too"
            )
        if not found:
            where = f"strategy {strategy}" if strategy else str(self.layout.root)
            raise NotFoundError(
                f"no run {run_id} in {where} (removed by retention, or never saved)"
            )
        return found[0]

    def info(self, run_id: str, *, strategy: str | None = None) -> RunInfo:
        """A run without its tables."""
        table, row = self._locate(run_id, strategy)
        if table is None:
            return self.legacy.info(run_id, strategy=str(row))
        return self._row_info(table, row)  # type: ignore[arg-type]

    def load(self, run_id: str, *, strategy: str | None = None) -> BacktestRun:
        """A whole run: its info and its tables as pandas DataFrames, checksums verified."""
        table, row = self._locate(run_id, strategy, tables=True)
        if table is None:
            return self.legacy.load(run_id, strategy=str(row))
        assert isinstance(row, dict)
        tables = {k: v.to_pandas() for k, v in table.load_tables(row).items()}
        info = self._row_info(table, row)
        return BacktestRun(info, tables.get("equity_curve"), tables.get("trades"), tables)

    def existing(self, strategy: str, run_ids: Iterable[str]) -> set[str]:
        """Which of ``run_ids`` (runs of ``strategy``) are stored (read by id, not listed)."""
        return set(self.infos(strategy, run_ids))

    def infos(self, strategy: str, run_ids: Iterable[str]) -> dict[str, RunInfo]:
        """The stored runs among ``run_ids`` (runs of ``strategy``), by id; ids not stored
        are left out."""
        validate_name("strategy id", strategy)
        ids = [check_id(i) for i in dict.fromkeys(run_ids)]
        table = self.table(strategy)
        manifest = table.manifest()
        out: dict[str, RunInfo] = {}
        if manifest is not None:
            out = {i: self._row_info(table, r) for i, r in table.rows(manifest, ids).items()}
        rest = [i for i in ids if i not in out]
        if rest and self._has_legacy(strategy):
            out.update(self.legacy.infos(strategy, rest))
        return out

    # --- many runs --------------------------------------------------------------------------

    def query(
        self,
        strategy: str | None = None,
        *,
        since: Any = None,
        until: Any = None,
        where: Iterable[tuple[str, str, float] | str] = (),
        tags: Mapping[str, Any] | None = None,
        columns: Sequence[str] | None = None,
        order_by: str | None = None,
        sort_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
        version: int | None = None,
    ) -> Any:
        """Runs as a pandas DataFrame: one row per run, columns ``run_id``, ``strategy``,
        ``created_at``, ``writer``, ``metrics.<name>``, ``params.<name>``, ``tags.<name>``,
        ``data_versions`` and ``tables``.

        ``where``: metric filters, as ("sharpe", ">=", 1.5) or "sharpe>=1.5" (a run without
        the metric fails the filter), pushed down: segments whose recorded min/max cannot
        match are not read, and the Parquet reader skips row groups by their statistics.
        ``tags``: exact matches. ``columns``: only these (a bare name is a metric), with
        ``run_id``. ``order_by`` (or ``sort_by``): a column or a metric name.
        ``since``/``until``: creation time bounds (inclusive). ``limit``: at most that many
        rows (a non-negative integer). ``version``: the table's version to read (with
        ``strategy``; legacy runs have no versions and are left out).
        """

        filters = parse_filters(where)
        lo, hi = _to_dt(since, "since"), _to_dt(until, "until")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise InvalidDataError(f"limit must be an integer >= 0, got {limit!r}")
        if version is not None and strategy is None:
            raise InvalidDataError("a version belongs to one strategy's table: give strategy")
        order = order_by or sort_by
        names = [validate_name("strategy id", strategy)] if strategy else self.strategies()
        frames = []
        for name in names:
            frames.extend(
                table_frames(self.table(name), name, lo, hi, filters, tags, columns, version)
            )
            if version is None and self._has_legacy(name):
                legacy = self.legacy.query(
                    name, since=lo, until=hi, where=[(f.metric, f.op, f.value) for f in filters],
                    tags=tags,
                )  # fmt: skip
                if not legacy.empty:
                    frames.append(legacy)
        return assemble(frames, order, ascending=ascending, limit=limit, columns=columns)

    def run_files(
        self, strategy: str | None = None, *, since: Any = None, until: Any = None
    ) -> Iterator[tuple[str, str, Path]]:
        """(strategy, run id, where it is) of stored runs, in time order per strategy: the
        run's JSON file (legacy layout) or its table's directory."""
        names = [validate_name("strategy id", strategy)] if strategy else self.strategies()
        for name in names:
            frame = self.query(name, since=since, until=until, columns=["run_id"])
            if not frame.empty:
                legacy = set()
                if self._has_legacy(name):
                    legacy = {i for _, i, _ in self.legacy.run_files(name, since=since,
                                                                      until=until)}  # fmt: skip
                for run_id in frame["run_id"]:
                    where = (self.legacy.run_path(name, run_id) if run_id in legacy
                             else self.table(name).directory)  # fmt: skip
                    yield name, str(run_id), where

    def iter_infos(self, *, since: Any = None) -> Iterator[RunInfo]:
        """Every stored run created at or after ``since``, strategy by strategy, in time
        order (what the connector syncs)."""
        import pyarrow.compute as pc

        lo = _to_dt(since, "since")
        lo_ms = None if lo is None else int(lo.timestamp() * 1000)
        since_at = None if lo is None else pa.scalar(lo, _UTC_MS)

        def created_since(rows: pa.Table) -> Any:
            return pc.greater_equal(rows.column("created_at"), since_at)

        for name in self.strategies():
            table = self.table(name)
            manifest = table.manifest()
            infos: list[RunInfo] = []
            for entry in manifest.segments if manifest else ():
                if lo_ms is not None and entry.max_created_ms < lo_ms:
                    continue
                rows = table.read_segment(
                    entry, columns=ROW_COLUMNS, filters=None if lo is None else created_since
                )
                infos.extend(self._row_info(table, r) for r in rows.to_pylist())
            if self._has_legacy(name):
                have = {i.run_id for i in infos}
                for _, run_id, _ in self.legacy.run_files(name, since=lo):
                    if run_id not in have:
                        try:
                            infos.append(self.legacy.info(run_id, strategy=name))
                        except NotFoundError:
                            continue
            infos.sort(key=lambda i: (i.created_at, i.run_id))
            yield from infos

    def migrate(
        self, strategy: str | None = None, *, dry_run: bool = False, batch_size: int = 1000
    ) -> Any:
        """Move legacy one-file-per-run runs into the table (see
        :mod:`efsray.store.results.migrate`); returns a ``MigrationReport``."""
        from efsray.store.results.migrate import migrate

        if strategy is not None:
            validate_name("strategy id", strategy)
        try:
            return migrate(self, strategy, dry_run=dry_run, batch_size=batch_size)
        finally:
            self._legacy.clear()  # legacy directories may be gone now

    # --- retention --------------------------------------------------------------------------

    def prune(
        self, older_than: float, *, grace_cutoff: float, dry_run: bool = False
    ) -> tuple[int, int]:
        """Retention (``efsray cleanup``): see :meth:`ResultTable.prune` and
        :meth:`LegacyRuns.prune`. Returns (files, bytes)."""
        files, nbytes = self.legacy.prune(older_than, grace_cutoff=grace_cutoff, dry_run=dry_run)
        for name in list_subdirs(self.tables_root):  # a stray file there is not a table
            if not is_valid_name(name):
                continue
            f, b = self.table(name).prune(older_than, grace_cutoff=grace_cutoff, dry_run=dry_run)
            files += f
            nbytes += b
        return files, nbytes


def _writer() -> str:
    import os
    import socket

    return f"{socket.gethostname().split('.')[0][:32] or 'host'}:{os.getpid()}"


def _spec(item: Mapping[str, Any]) -> RunSpec:
    if not isinstance(item, Mapping):
        raise InvalidDataError(
            f"a run to save must be a RunSpec or a dict, got {type(item).__name__}"
        )
    fields = set(RunSpec.__dataclass_fields__)
    unknown = set(item) - fields
    if unknown:
        raise InvalidDataError(f"unknown run fields {sorted(unknown)}; expected {sorted(fields)}")
    if "metrics" not in item:
        raise InvalidDataError("a run to save needs metrics")
    return RunSpec(**item)


def _check_legacy_same(info: RunInfo, run: PreparedRun) -> None:
    stored = {"metrics": info.metrics, "params": info.params, "tags": info.tags,
              "data_versions": info.data_versions, "extra": info.extra}  # fmt: skip
    mine = jsonsafe.decode({k: run.record[k] for k in stored})
    same = jsonsafe.dumps(jsonsafe.encode(stored, "run")) == jsonsafe.dumps(
        jsonsafe.encode(mine, "run")
    ) and set(info.tables) == set(run.tables)
    if not same:
        raise InvalidDataError(
            f"run {run.run_id} already exists ({info.path}) with a different record; a chosen "
            "run id must name exactly one result"
        )
