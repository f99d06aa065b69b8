"""Backtest results: one immutable file per run, sharded by time, queried as a DataFrame.

A run of strategy ``<s>`` is ``results/backtests/<s>/<YYYY-MM-DD>/<HHMM>/<run_id>.json``
(metrics, parameters, tags, the market-data versions the run read, and anything else
JSON-safe), plus ``<run_id>.<table>.parquet`` for an equity curve and a trade list. The run
id (:mod:`efsray.store.ids`) is time-ordered and random; every file of a run is created with
``create_exclusive``, so two workers can never overwrite each other's run, even with the
same id: the loser draws a new id. The JSON file is written last: a run exists once it
does, and a worker killed before that leaves only Parquet files that cleanup removes.

Directories hold one minute of one strategy's runs, so they stay under ~10,000 entries up
to ~50 runs per second per strategy. Listing is how queries find runs: on EFS a run saved on
another host may be missing from a query for up to the NFS attribute cache time
(``acdirmax``, 60 s by default); loading a run by id is immediate.

Run ids are unique within a strategy by construction (``create_exclusive``) and across
strategies by their 80 random bits; should two strategies ever hold the same id, loading it
without naming the strategy says so instead of guessing.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import math
import operator
import os
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efsray.errors import (
    CorruptionError,
    InvalidDataError,
    InvalidNameError,
    NotFoundError,
    storage_error_from,
)
from efsray.store import jsonsafe
from efsray.store.hashing import DEFAULT_ALGORITHM, check, new_hasher, split_digest
from efsray.store.ids import id_time, is_id, new_id
from efsray.store.layout import StoreLayout
from efsray.store.names import validate_name
from efsray.store.nfs import create_exclusive, ensure_dir, kind_of, list_dir, read_bytes

__all__ = ["BacktestRun", "ResultStore", "RunInfo", "parse_where"]

log = logging.getLogger("efsray.store")

TABLES = ("equity_curve", "trades")
MAX_RUN_JSON_BYTES = 16 << 20
_READ_WORKERS = 16
_ID_ATTEMPTS = 16
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt, "=": operator.eq,
}  # fmt: skip
_WHERE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.\-]*)\s*(<=|>=|==|!=|<|>|=)\s*(\S.*?)\s*")
_HOST = socket.gethostname().split(".")[0][:64] or "host"


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A stored run without its tables."""

    run_id: str
    strategy: str
    created_at: dt.datetime
    path: str
    metrics: dict[str, Any]
    params: dict[str, Any]
    data_versions: dict[str, int]
    tags: dict[str, Any]
    extra: dict[str, Any]
    tables: tuple[str, ...]
    writer: str


@dataclass(frozen=True, slots=True)
class BacktestRun:
    """A whole run: its info and its tables (pandas DataFrames, None when not saved)."""

    info: RunInfo
    equity_curve: Any = None
    trades: Any = None
    tables: dict[str, Any] = field(default_factory=dict)


def parse_where(text: str) -> tuple[str, str, float]:
    """Parse ``"sharpe>=1.5"`` into ("sharpe", ">=", 1.5); InvalidDataError otherwise."""
    match = _WHERE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidDataError(
            f"cannot read the filter {text!r}: write METRIC OP NUMBER, e.g. 'sharpe>=1.5' "
            "(OP is one of < <= > >= == !=)"
        )
    name, op, raw = match.groups()
    try:
        value = float(raw)
    except ValueError:
        raise InvalidDataError(f"in the filter {text!r}, {raw!r} is not a number") from None
    return name, "==" if op == "=" else op, value


class ResultStore:
    """Backtest runs under ``layout.backtests``.

    ``id_factory`` makes run ids (default: :func:`efsray.store.ids.new_id`); ``clock``
    returns the current time in seconds.
    """

    def __init__(
        self,
        layout: StoreLayout,
        *,
        id_factory: Callable[[], str] = new_id,
        clock: Callable[[], float] = time.time,
        algorithm: str | None = None,
    ) -> None:
        self.layout = layout
        self._new_id = id_factory
        self._clock = clock
        self.algorithm = algorithm or DEFAULT_ALGORITHM
        new_hasher(self.algorithm)

    # --- paths ---------------------------------------------------------------------------

    def _run_dir(self, strategy: str, run_id: str) -> Path:
        when = id_time(run_id)
        return self.layout.backtests / strategy / f"{when:%Y-%m-%d}" / f"{when:%H%M}"

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
    ) -> RunInfo:
        """Store one run. Everything is validated before anything is written.

        ``metrics``: name -> number (NaN and infinity allowed). ``params``, ``tags``,
        ``extra``: JSON-safe dicts. ``equity_curve`` and ``trades``: pandas or polars
        DataFrames, pandas Series, or Arrow tables (stored as Parquet). ``data_versions``:
        the market data the run read, as {"AAPL/1m": 12} or CommitInfo/SeriesInfo objects.
        """
        validate_name("strategy id", strategy)
        record: dict[str, Any] = {
            "format": 1,
            "kind": "backtest-run",
            "strategy": strategy,
            "metrics": jsonsafe.encode_metrics(metrics),
            "params": _encode_dict(params, "params"),
            "data_versions": _data_versions(data_versions),
            "tags": _encode_dict(tags, "tags"),
            "extra": _encode_dict(extra, "extra"),
        }
        given = (("equity_curve", equity_curve), ("trades", trades))
        tables = {name: _parquet(name, value) for name, value in given if value is not None}
        for _ in range(_ID_ATTEMPTS):
            run_id = self._new_id()
            if not is_id(run_id):
                raise InvalidDataError(f"id_factory returned {run_id!r}, which is not an id")
            directory = self._run_dir(strategy, run_id)
            ensure_dir(directory)
            created: list[Path] = []
            try:
                record["tables"] = {}
                for name, (buffer, rows) in tables.items():
                    path = directory / f"{run_id}.{name}.parquet"
                    create_exclusive(path, buffer)
                    created.append(path)
                    record["tables"][name] = {
                        "file": path.name, "rows": rows, "bytes": len(buffer),
                        "digest": _digest(buffer, self.algorithm),
                    }  # fmt: skip
                record.update(
                    run_id=run_id,
                    created_at=id_time(run_id).isoformat(),
                    writer={"host": _HOST, "pid": os.getpid()},
                )
                raw = jsonsafe.dumps(record)
                if len(raw) > MAX_RUN_JSON_BYTES:
                    raise InvalidDataError(
                        f"the run's JSON is {len(raw)} bytes, more than {MAX_RUN_JSON_BYTES}; "
                        "put bulky data in equity_curve or trades (Parquet)"
                    )
                path = directory / f"{run_id}.json"
                create_exclusive(path, raw)
            except FileExistsError:
                log.warning("run id %s of %s was taken; drawing another", run_id, strategy)
                _unlink_all(created)
                continue
            except BaseException:
                _unlink_all(created)
                raise
            return _run_info(record, path)
        raise InvalidDataError(
            f"could not find a free run id in {_ID_ATTEMPTS} attempts; the id_factory "
            "keeps returning ids that exist"
        )

    # --- reading -------------------------------------------------------------------------

    def _find(self, run_id: str, strategy: str | None) -> tuple[str, Path]:
        if not is_id(run_id):
            raise InvalidNameError(f"{run_id!r} is not a run id (26 characters, like {new_id()})")
        candidates = [validate_name("strategy id", strategy)] if strategy else self.strategies()
        found = [
            (name, path)
            for name in candidates
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
            f"no run {run_id}{' of strategy ' + strategy if strategy else ''} in "
            f"{self.layout.root} (removed by retention, or never saved)"
        )

    def info(self, run_id: str, *, strategy: str | None = None) -> RunInfo:
        """A run's JSON part."""
        _, path = self._find(run_id, strategy)
        return _read_info(path)

    def load(self, run_id: str, *, strategy: str | None = None) -> BacktestRun:
        """A whole run: its info and its tables as pandas DataFrames, checksums verified."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        _, path = self._find(run_id, strategy)
        raw_record = _read_record(path)
        info = _run_info(raw_record, path)
        tables: dict[str, Any] = {}
        for name, entry in (raw_record.get("tables") or {}).items():
            file = path.parent / str(entry["file"])
            data = read_bytes(file)
            algorithm, _ = split_digest(str(entry["digest"]))
            check(f"table {name!r} of run {run_id}", file, int(entry["bytes"]),
                  str(entry["digest"]), len(data), _digest(data, algorithm))  # fmt: skip
            try:
                tables[name] = pq.read_table(pa.BufferReader(data)).to_pandas()
            except (pa.ArrowInvalid, OSError) as exc:
                raise CorruptionError(
                    f"table {name!r} of run {run_id} ({file}) is unreadable: {exc}"
                ) from None
        return BacktestRun(info, tables.get("equity_curve"), tables.get("trades"), tables)

    def strategies(self) -> list[str]:
        """Strategies with runs (a listing: may lag other hosts by ~a minute)."""
        return [n for n in _listdir(self.layout.backtests) if _valid(n)]

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

        filters = [parse_where(w) if isinstance(w, str) else _check_filter(w) for w in where]
        paths = [p for _, _, p in self.run_files(strategy, since=since, until=until)]
        records = _read_many(paths)
        rows = []
        for record in records:
            metrics = jsonsafe.decode(record.get("metrics") or {})
            if not all(_passes(metrics.get(n), op, v) for n, op, v in filters):
                continue
            if tags and any(record.get("tags", {}).get(k) != v for k, v in tags.items()):
                continue
            rows.append(_row(record, metrics))
        frame = pd.DataFrame(rows)
        if frame.empty:
            frame = pd.DataFrame(columns=["run_id", "strategy", "created_at", "writer"])
        else:
            frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601")
        if sort_by is not None:
            column = sort_by if sort_by in frame.columns else f"metrics.{sort_by}"
            if column not in frame.columns and not frame.empty:
                raise InvalidDataError(f"cannot sort by {sort_by!r}: no such column or metric")
            if column in frame.columns:
                frame = frame.sort_values(
                    column, ascending=ascending, na_position="last", kind="stable"
                )
        else:
            frame = (
                frame.sort_values(["created_at", "run_id"], kind="stable")
                if not frame.empty
                else frame
            )
        if limit is not None:
            frame = frame.head(limit)
        return frame.reset_index(drop=True)

    # --- retention -----------------------------------------------------------------------

    def prune(
        self, older_than: float, *, grace_cutoff: float, dry_run: bool = False
    ) -> tuple[int, int]:
        """Remove runs created before ``older_than`` (seconds since the epoch) except the
        newest run of each strategy, and Parquet files of runs that never committed once
        they are older than ``grace_cutoff``. Returns (files, bytes)."""
        files = nbytes = 0
        for strategy in self.strategies():
            base = self.layout.backtests / strategy
            runs: list[tuple[str, Path]] = []
            orphans: list[Path] = []
            for day in _listdir(base):
                for minute in _listdir(base / day):
                    directory = base / day / minute
                    names = _listdir(directory)
                    ids = {n[:-5] for n in names if n.endswith(".json") and is_id(n[:-5])}
                    runs.extend((i, directory) for i in ids)
                    for name in names:
                        run_id = name.split(".", 1)[0]
                        if name.endswith(".parquet") and is_id(run_id) and run_id not in ids:
                            orphans.append(directory / name)
            runs.sort()
            for run_id, directory in runs[:-1]:  # never the newest run of a strategy
                if id_time(run_id).timestamp() >= min(older_than, grace_cutoff):
                    continue
                n, b = _remove_run(directory, run_id, dry_run)
                files += n
                nbytes += b
            for path in orphans:
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                if (
                    st.st_mtime < grace_cutoff
                    and id_time(path.name.split(".", 1)[0]).timestamp() < grace_cutoff
                ):
                    files += 1
                    nbytes += st.st_size
                    if not dry_run:
                        _unlink(path)
            if not dry_run:
                _remove_empty_dirs(base, min(older_than, grace_cutoff))
        return files, nbytes


# --- helpers -----------------------------------------------------------------------------


def _valid(name: str) -> bool:
    try:
        validate_name("name", name)
    except InvalidNameError:
        return False
    return True


def _listdir(path: Path) -> list[str]:
    return sorted(list_dir(path))


def _encode_dict(value: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidDataError(f"{what} must be a dict, got {type(value).__name__}")
    encoded: dict[str, Any] = jsonsafe.encode(value, what)
    return encoded


def _data_versions(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    out: dict[str, int] = {}
    items: Iterable[Any] = value.items() if isinstance(value, Mapping) else value
    try:
        iterator = iter(items)
    except TypeError:
        raise InvalidDataError(
            f"data_versions must be a dict like {{'AAPL/1m': 12}} or a list of CommitInfo, got "
            f"{type(value).__name__}"
        ) from None
    for item in iterator:
        if isinstance(value, Mapping):
            key, version = item
            symbol, sep, timeframe = str(key).partition("/")
            if not sep:
                raise InvalidDataError(f"data_versions key {key!r} must be 'SYMBOL/TIMEFRAME'")
        elif hasattr(item, "symbol") and hasattr(item, "version"):
            symbol, timeframe, version = item.symbol, item.timeframe, item.version
        elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 3:
            symbol, timeframe, version = item
        else:
            raise InvalidDataError(
                f"data_versions entry {item!r} is not (symbol, timeframe, version)"
            )
        validate_name("symbol", symbol)
        validate_name("timeframe", timeframe)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidDataError(
                f"data_versions[{symbol}/{timeframe}] must be a version >= 1, got {version!r}"
            )
        out[f"{symbol}/{timeframe}"] = version
    return out


def _parquet(name: str, value: Any) -> tuple[bytes, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = _to_arrow(name, value)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes(), table.num_rows


def _to_arrow(name: str, value: Any) -> Any:
    import pyarrow as pa

    if isinstance(value, pa.Table):
        return value
    module = type(value).__module__
    try:
        if module.startswith("pandas"):
            import pandas as pd

            if isinstance(value, pd.Series):
                value = value.to_frame(name=value.name if value.name is not None else name)
            if isinstance(value, pd.DataFrame):
                return pa.Table.from_pandas(value, preserve_index=None)
        if module.startswith("polars") and hasattr(value, "to_arrow"):
            return value.to_arrow()
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        raise InvalidDataError(f"{name} cannot be stored as Parquet: {exc}") from None
    raise InvalidDataError(
        f"{name} must be a pandas or polars DataFrame, a pandas Series or an Arrow table, "
        f"got {type(value).__name__}"
    )


def _digest(data: bytes, algorithm: str) -> str:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return f"{algorithm}:{hasher.hexdigest()}"


def _unlink(path: Path) -> bool:
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error_from(exc, "removing", path) from exc
    return True


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError as exc:
            log.warning("could not remove %s (cleanup will): %s", path, exc)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        raise NotFoundError(f"run file {path} was removed (by retention?)") from None
    try:
        record = jsonsafe.loads(raw)
    except ValueError as exc:
        raise CorruptionError(
            f"run file {path} is not valid JSON ({exc}); restore it from a backup"
        ) from None
    if not isinstance(record, dict) or not is_id(record.get("run_id")):
        raise CorruptionError(f"run file {path} is not an efsray run")
    return record


def _read_info(path: Path) -> RunInfo:
    return _run_info(jsonsafe.decode(_read_record(path)), path)


def _run_info(record: dict[str, Any], path: Path) -> RunInfo:
    record = jsonsafe.decode(record)
    writer = record.get("writer") or {}
    return RunInfo(
        run_id=record["run_id"],
        strategy=record["strategy"],
        created_at=dt.datetime.fromisoformat(record["created_at"]),
        path=str(path),
        metrics=dict(record.get("metrics") or {}),
        params=dict(record.get("params") or {}),
        data_versions=dict(record.get("data_versions") or {}),
        tags=dict(record.get("tags") or {}),
        extra=dict(record.get("extra") or {}),
        tables=tuple(sorted(record.get("tables") or {})),
        writer=f"{writer.get('host', '?')}:{writer.get('pid', '?')}",
    )


def _read_many(paths: list[Path]) -> list[dict[str, Any]]:
    def one(path: Path) -> dict[str, Any] | None:
        try:
            return _read_record(path)
        except NotFoundError:
            return None  # removed by retention between the listing and the read
        except CorruptionError as exc:
            log.warning("skipping damaged run file: %s", exc)
            return None

    if len(paths) <= 4:
        found = [one(p) for p in paths]
    else:
        with ThreadPoolExecutor(min(_READ_WORKERS, len(paths))) as pool:
            found = list(pool.map(one, paths))
    return [r for r in found if r is not None]


def _row(record: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    writer = record.get("writer") or {}
    row: dict[str, Any] = {
        "run_id": record["run_id"],
        "strategy": record.get("strategy"),
        "created_at": record.get("created_at"),
        "writer": f"{writer.get('host', '?')}:{writer.get('pid', '?')}",
    }
    for name, value in metrics.items():
        row[f"metrics.{name}"] = math.nan if value is None else value
    for prefix in ("params", "tags"):
        for name, value in jsonsafe.decode(record.get(prefix) or {}).items():
            row[f"{prefix}.{name}"] = (
                value if not isinstance(value, dict | list) else jsonsafe.dumps(value).decode()
            )
    row["data_versions"] = ",".join(
        f"{k}@{v}" for k, v in sorted((record.get("data_versions") or {}).items())
    )
    row["tables"] = ",".join(sorted(record.get("tables") or {}))
    return row


def _check_filter(item: Any) -> tuple[str, str, float]:
    try:
        name, op, value = item
    except (TypeError, ValueError):
        raise InvalidDataError(
            f"filter {item!r} must be (metric, op, number) or 'metric>=number'"
        ) from None
    if op not in _OPS:
        raise InvalidDataError(f"filter {item!r}: op must be one of {', '.join(_OPS)}")
    return str(name), "==" if op == "=" else op, value


def _passes(value: Any, op: str, target: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return False
    return bool(_OPS[op](value, target))


def _to_dt(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp = value
    elif isinstance(value, dt.date):
        stamp = dt.datetime(value.year, value.month, value.day)
    else:
        try:
            stamp = dt.datetime.fromisoformat(str(value))
        except ValueError:
            raise InvalidDataError(
                f"{what} {value!r} is not a time: use ISO 8601, like 2024-05-01T12:00"
            ) from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)


def _remove_run(directory: Path, run_id: str, dry_run: bool) -> tuple[int, int]:
    """Remove a run: its JSON first (the run is gone), then its tables."""
    files = nbytes = 0
    json_path = directory / f"{run_id}.json"
    names = [json_path.name] + [
        n for n in _listdir(directory) if n.startswith(f"{run_id}.") and n.endswith(".parquet")
    ]
    for name in names:
        try:
            size = os.stat(directory / name).st_size
        except FileNotFoundError:
            continue
        if dry_run or _unlink(directory / name):
            files += 1
            nbytes += size
    return files, nbytes


def _remove_empty_dirs(base: Path, cutoff: float) -> None:
    """Remove empty minute and day directories whose time is before ``cutoff``."""
    for day in _listdir(base):
        for minute in _listdir(base / day):
            try:
                when = dt.datetime.strptime(f"{day} {minute}", "%Y-%m-%d %H%M").replace(
                    tzinfo=dt.UTC
                )
            except ValueError:
                continue
            if when.timestamp() + 60 < cutoff:
                _rmdir_quietly(base / day / minute)
        try:
            day_start = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            continue
        if day_start.timestamp() + 86400 < cutoff:
            _rmdir_quietly(base / day)


def _rmdir_quietly(path: Path) -> None:
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            log.warning("could not remove empty directory %s: %s", path, exc)
