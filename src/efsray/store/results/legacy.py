"""The legacy layout of backtest results: one immutable file per run, sharded by time.

Stores written before the columnar table (:mod:`efsray.store.results.table`) hold their runs
this way; :class:`LegacyRuns` reads them (``ResultStore`` merges them into every answer),
prunes them, and still writes them for tests of the migration
(``efsray results migrate`` converts them into the table). What follows is the format.


A run of strategy ``<s>`` is ``results/backtests/<s>/<YYYY-MM-DD>/<HHMM>/<run_id>.json``:
metrics, parameters, tags, the market-data versions the run read, anything else JSON-safe,
and its tables (an equity curve, a trade list). A table whose Arrow IPC stream is at most
``inline_max_bytes`` (64 KiB by default) is embedded in the JSON (base64, with its size and
digest), so a typical run is ONE file, created with ONE ``create_exclusive``; a bigger table
is a Parquet file of its own, ``<run_id>.<table>.<token>.parquet``, written first (under a
unique name no reader knows until the JSON names it). The JSON is the commit point: a run
exists once it does, and a worker killed before that leaves only Parquet files that cleanup
removes. Loading verifies every table's digest, embedded or not, and returns the same
DataFrame either way.

Run ids (:mod:`efsray.store.ids`) are time-ordered. By default ``save`` draws a random one;
the JSON is created with ``create_exclusive``, so two workers can never overwrite each
other's run, even with the same id: the loser draws a new id. A caller may choose the id
instead (``run_id=``, e.g. :func:`efsray.store.ids.derive` of the things that determine the
result): saving is then idempotent. If the run already exists (``link()``'s EEXIST is the
source of truth, not a listing), the stored record is compared with the new one, ignoring
who wrote it: the same record returns the stored run (a retried task whose dead attempt
had already saved), a different one raises :class:`InvalidDataError`. Of many processes
saving one id at once, exactly one creates the file and every other gets the stored run.

Directories hold one minute of one strategy's runs, so they stay under ~10,000 entries up
to ~50 runs per second per strategy (a caller choosing ids spreads big batches over
minutes itself). Listing is how queries find runs: on EFS a run saved on another host may
be missing from a query for up to the NFS attribute cache time (``acdirmax``, 60 s by
default); loading a run by id is immediate, and :meth:`ResultStore.existing` checks the ids a
listing did not show by name.

Run ids are unique within a strategy by construction (``create_exclusive``) and across
strategies by their 80 random bits; should two strategies ever hold the same id, loading it
without naming the strategy says so instead of guessing.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from efsray.errors import (
    InvalidDataError,
    NotFoundError,
)
from efsray.store import jsonsafe
from efsray.store.hashing import DEFAULT_ALGORITHM, new_hasher
from efsray.store.ids import MonotonicIds, id_time, is_id
from efsray.store.layout import StoreLayout
from efsray.store.names import is_valid_name, validate_name
from efsray.store.nfs import (
    ensure_dir,
    kind_of,
    list_dir,
)
from efsray.store.results.legacy_files import (
    _decode_table,
    _listdir,
    _map,
    _named_files,
    _read_info,
    _read_many,
    _read_record,
    _remove_empty_dirs,
    _remove_run,
    _row,
    _run_info,
    _stat,
    _table_bytes,
    _unlink,
)
from efsray.store.results.records import (
    BacktestRun,
    RunInfo,
)
from efsray.store.results.records import (
    check_id as _check_id,
)
from efsray.store.results.records import (
    to_datetime as _to_dt,
)
from efsray.store.results.where import parse_filters

__all__ = ["INLINE_MAX_BYTES", "LegacyRuns"]

log = logging.getLogger("efsray.store")

TABLES = ("equity_curve", "trades")
MAX_RUN_JSON_BYTES = 16 << 20
INLINE_MAX_BYTES = 64 << 10  # tables whose Arrow IPC is at most this are embedded in the JSON
_SAME_ID_ATTEMPTS = 3
_IGNORED = ("run_id", "writer", "created_at", "tables")  # the id names it; the rest is
# who wrote it and when; tables are compared by content
_ID_ATTEMPTS = 16
_HOST = socket.gethostname().split(".")[0][:64] or "host"


class LegacyRuns:
    """Backtest runs under ``layout.backtests``.

    ``id_factory`` makes run ids when the caller does not choose one (default: a
    :class:`efsray.store.ids.MonotonicIds`: new ids that sort in the order this store drew
    them); ``clock`` returns the current time in seconds;
    ``inline_max_bytes``: tables whose Arrow IPC stream is at most this many bytes are embedded in
    the run's JSON (0: every table is a file of its own).
    """

    def __init__(
        self,
        layout: StoreLayout,
        *,
        id_factory: Callable[[], str] | None = None,
        clock: Callable[[], float] = time.time,
        algorithm: str | None = None,
        inline_max_bytes: int = INLINE_MAX_BYTES,
    ) -> None:
        if (
            not isinstance(inline_max_bytes, int)
            or isinstance(inline_max_bytes, bool)
            or not 0 <= inline_max_bytes <= MAX_RUN_JSON_BYTES // 4
        ):
            raise InvalidDataError(
                f"inline_max_bytes must be an integer from 0 to {MAX_RUN_JSON_BYTES // 4}, "
                f"got {inline_max_bytes!r}"
            )
        self.layout = layout
        self._new_id = id_factory or MonotonicIds()
        self._clock = clock
        self.algorithm = algorithm or DEFAULT_ALGORITHM
        self.inline_max_bytes = inline_max_bytes
        new_hasher(self.algorithm)
        self._dirs: set[Path] = set()  # run directories known to exist (a check is a round trip)

    # --- paths ---------------------------------------------------------------------------

    def _run_dir(self, strategy: str, run_id: str) -> Path:
        when = id_time(run_id)
        return self.layout.backtests / strategy / f"{when:%Y-%m-%d}" / f"{when:%H%M}"

    def run_path(self, strategy: str, run_id: str) -> Path:
        """Where run ``run_id`` of ``strategy`` is (or would be) stored: its JSON file."""
        validate_name("strategy id", strategy)
        _check_id(run_id)
        return self._run_dir(strategy, run_id) / f"{run_id}.json"

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._dirs:
            ensure_dir(directory)
            self._dirs.add(directory)

    # --- reading -------------------------------------------------------------------------

    def _find(self, run_id: str, strategy: str | None) -> tuple[str, Path]:
        """The strategy and JSON path of run ``run_id``. With the strategy given, the path
        is computed, not checked: the read that follows is the check (one round trip, not
        two) and raises NotFoundError if the run is not there."""
        if strategy is not None:
            return strategy, self.run_path(strategy, run_id)
        _check_id(run_id)
        found = [
            (name, path)
            for name in self.strategies()
            if kind_of(path := self._run_dir(name, run_id) / f"{run_id}.json") == "file"
        ]
        if len(found) > 1:
            raise InvalidDataError(
                f"run id {run_id} exists for strategies {', '.join(n for n, _ in found)}: "
                "give the strategy too"
            )
        if found:
            return found[0]
        raise NotFoundError(
            f"no run {run_id} in {self.layout.root} (removed by retention, or never saved)"
        )

    def info(self, run_id: str, *, strategy: str | None = None) -> RunInfo:
        """A run's JSON part."""
        _, path = self._find(run_id, strategy)
        return _read_info(path)

    def load(self, run_id: str, *, strategy: str | None = None) -> BacktestRun:
        """A whole run: its info and its tables as pandas DataFrames, checksums verified."""
        _, path = self._find(run_id, strategy)
        raw_record = _read_record(path)
        info = _run_info(raw_record, path)
        tables: dict[str, Any] = {}
        for name, entry in (raw_record.get("tables") or {}).items():
            data = _table_bytes(path, run_id, name, entry)
            tables[name] = _decode_table(path, run_id, name, entry, data).to_pandas()
        return BacktestRun(info, tables.get("equity_curve"), tables.get("trades"), tables)

    def existing(self, strategy: str, run_ids: Iterable[str]) -> set[str]:
        """Which of ``run_ids`` (runs of ``strategy``) are stored.

        One listing per run directory, then the ids a listing did not show are checked by
        name, in parallel: a listing can lag other hosts' new runs by up to a minute on EFS,
        a lookup by name goes to the server. Absence is only ever concluded from the latter.
        """
        validate_name("strategy id", strategy)
        ids = list(dict.fromkeys(run_ids))
        groups: dict[Path, list[str]] = {}
        for run_id in ids:
            groups.setdefault(self._run_dir(strategy, _check_id(run_id)), []).append(run_id)
        found: set[str] = set()
        for directory, group in groups.items():
            names = set(list_dir(directory))
            found.update(i for i in group if f"{i}.json" in names)
        unseen = [i for i in ids if i not in found]
        present = _map(lambda i: kind_of(self.run_path(strategy, i)) == "file", unseen)
        found.update(i for i, yes in zip(unseen, present, strict=True) if yes)
        return found

    def infos(self, strategy: str, run_ids: Iterable[str]) -> dict[str, RunInfo]:
        """The stored runs among ``run_ids`` (runs of ``strategy``), by id; ids not stored
        are left out. Each run is read by name (immediate, unlike a listing), in parallel."""
        validate_name("strategy id", strategy)
        ids = list(dict.fromkeys(run_ids))
        paths = [self._run_dir(strategy, _check_id(i)) / f"{i}.json" for i in ids]

        def one(path: Path) -> RunInfo | None:
            try:
                return _read_info(path)
            except NotFoundError:
                return None

        return {i: info for i, info in zip(ids, _map(one, paths), strict=True) if info}

    def strategies(self) -> list[str]:
        """Strategies with runs (a listing: may lag other hosts by ~a minute)."""
        return [n for n in _listdir(self.layout.backtests) if is_valid_name(n)]

    def run_files(
        self, strategy: str | None = None, *, since: Any = None, until: Any = None
    ) -> Iterator[tuple[str, str, Path]]:
        """(strategy, run_id, json path) of stored runs in time order per strategy."""
        lo, hi = _to_dt(since, "since"), _to_dt(until, "until")
        names = [validate_name("strategy id", strategy)] if strategy else self.strategies()
        for name in names:
            base = self.layout.backtests / name
            for day in _listdir(base):
                try:
                    day_date = dt.date.fromisoformat(day)
                except ValueError:
                    continue
                if (lo and day_date < lo.date()) or (hi and day_date > hi.date()):
                    continue
                for minute in _listdir(base / day):
                    for file in _listdir(base / day / minute):
                        run_id = file[:-5]
                        if not file.endswith(".json") or not is_id(run_id):
                            continue
                        when = id_time(run_id)
                        if (lo and when < lo) or (hi and when > hi):
                            continue
                        yield name, run_id, base / day / minute / file

    def query(
        self,
        strategy: str | None = None,
        *,
        since: Any = None,
        until: Any = None,
        where: Iterable[tuple[str, str, float] | str] = (),
        tags: Mapping[str, Any] | None = None,
        sort_by: str | None = None,
        ascending: bool = True,
        limit: int | None = None,
    ) -> Any:
        """Runs as a pandas DataFrame: one row per run, columns ``run_id``, ``strategy``,
        ``created_at``, ``writer``, ``metrics.<name>``, ``params.<name>``, ``tags.<name>``,
        ``data_versions`` and ``tables``.

        ``where``: metric filters, as ("sharpe", ">=", 1.5) or "sharpe>=1.5" (a run without
        the metric fails the filter). ``tags``: exact matches. ``sort_by``: a column or a
        metric name. ``since``/``until``: run creation time bounds (inclusive).
        """
        import pandas as pd

        filters = parse_filters(where)
        paths = [p for _, _, p in self.run_files(strategy, since=since, until=until)]
        records = _read_many(paths)
        rows = []
        for record in records:
            metrics = jsonsafe.decode(record.get("metrics") or {})
            if not all(f.passes(metrics.get(f.metric)) for f in filters):
                continue
            if tags and any(record.get("tags", {}).get(k) != v for k, v in tags.items()):
                continue
            rows.append(_row(record, metrics))
        from efsray.store.results.query import assemble

        frame = pd.DataFrame(rows)
        return assemble([frame], sort_by, ascending=ascending, limit=limit, columns=None)

    # --- retention -----------------------------------------------------------------------

    def prune(
        self, older_than: float, *, grace_cutoff: float, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove runs created before ``older_than`` (seconds since the epoch) except the
        newest run of each strategy, and Parquet files no committed run names (a writer
        killed before its JSON) once they are older than ``grace_cutoff``. Returns (files,
        bytes)."""
        files = nbytes = 0
        for strategy in self.strategies():
            base = self.layout.backtests / strategy
            runs: list[tuple[str, Path, list[str]]] = []  # (run id, directory, its tables)
            orphans: list[Path] = []
            for day in _listdir(base):
                for minute in _listdir(base / day):
                    directory = base / day / minute
                    names = _listdir(directory)
                    ids = {n[:-5] for n in names if n.endswith(".json") and is_id(n[:-5])}
                    parquet: dict[str, list[str]] = {}
                    for name in names:
                        run_id = name.split(".", 1)[0]
                        if name.endswith(".parquet") and is_id(run_id):
                            parquet.setdefault(run_id, []).append(name)
                    for run_id, tables in parquet.items():
                        if run_id not in ids:
                            orphans.extend(directory / n for n in tables)
                        else:  # a committed run; a dead attempt's table files may linger
                            named = _named_files(directory / f"{run_id}.json")
                            if named is not None:
                                orphans.extend(directory / n for n in tables if n not in named)
                    runs.extend((i, directory, parquet.get(i, [])) for i in ids)
            runs.sort()
            for run_id, directory, tables in runs[:-1]:  # never the newest run of a strategy
                if id_time(run_id).timestamp() >= min(older_than, grace_cutoff):
                    continue
                n, b = _remove_run(directory, run_id, tables, dry_run)
                files += n
                nbytes += b
            for path in orphans:
                st = _stat(path)
                if st is None:
                    continue
                if st.st_mtime < grace_cutoff:
                    files += 1
                    nbytes += st.st_size
                    if not dry_run:
                        _unlink(path)
            if not dry_run:
                _remove_empty_dirs(base, min(older_than, grace_cutoff))
        return files, nbytes
