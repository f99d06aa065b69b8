"""What a run is, before and after it is stored: validation, encoding, and the value objects
every reader returns (:class:`RunInfo`, :class:`BacktestRun`).

Both layouts (the columnar table and the legacy one-file-per-run layout) store the same
*record*: a JSON object of the run's metrics, parameters, data versions, tags and extras
(:mod:`efsray.store.jsonsafe`, NaN and infinity tagged), and up to two tables (an equity
curve, a trade list) as Arrow data. Two saves of one run id are the same run when their
records and tables agree, whoever wrote them and whenever.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from efsray.errors import InvalidDataError, InvalidNameError
from efsray.store import jsonsafe
from efsray.store.hashing import new_hasher
from efsray.store.ids import is_id, new_id
from efsray.store.names import validate_name

__all__ = [
    "TABLES",
    "BacktestRun",
    "RunInfo",
    "RunSpec",
    "check_id",
    "comparable",
    "digest",
    "make_record",
    "run_info",
    "to_arrow",
    "to_datetime",
]

TABLES = ("equity_curve", "trades")
_IGNORED = ("run_id", "writer", "created_at", "tables")  # who wrote it, when; tables apart


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A stored run without its tables. ``path`` is the run's JSON file (legacy layout) or
    its strategy's table directory."""

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


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run to save in a batch: the keyword arguments of ``ResultStore.save``."""

    metrics: Mapping[str, Any]
    params: Mapping[str, Any] | None = None
    equity_curve: Any = None
    trades: Any = None
    data_versions: Any = None
    tags: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None
    run_id: str | None = None


def check_id(run_id: Any) -> str:
    if not is_id(run_id):
        raise InvalidNameError(f"{run_id!r} is not a run id (26 characters, like {new_id()})")
    return str(run_id)


def make_record(strategy: str, spec: RunSpec) -> dict[str, Any]:
    """The JSON record of a run (validated; nothing written)."""
    return {
        "format": 1,
        "kind": "backtest-run",
        "strategy": strategy,
        "metrics": jsonsafe.encode_metrics(spec.metrics),
        "params": _encode_dict(spec.params, "params"),
        "data_versions": _data_versions(spec.data_versions),
        "tags": _encode_dict(spec.tags, "tags"),
        "extra": _encode_dict(spec.extra, "extra"),
    }


def comparable(record: Mapping[str, Any]) -> dict[str, Any]:
    """What a run *is*, in one normal form (NaN tagged, tuples as lists): the record
    without who wrote it, when, and its tables (compared by content separately)."""
    kept = jsonsafe.decode({k: v for k, v in record.items() if k not in _IGNORED})
    normal: dict[str, Any] = json.loads(jsonsafe.dumps(jsonsafe.encode(kept, "run")))
    return normal


_SCALARS = (int, float, str, bool, type(None))


def decode_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """``jsonsafe.decode`` of a record, one level at a time: the scalars of its dicts (most
    of a run) are taken as they are, only nested values are walked."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict) and not (len(value) == 1 and "$float" in value):
            out[key] = {
                k: v if type(v) in _SCALARS else jsonsafe.decode(v) for k, v in value.items()
            }
        else:
            out[key] = jsonsafe.decode(value)
    return out


def run_info(
    record: Mapping[str, Any],
    *,
    run_id: str,
    created_at: dt.datetime,
    path: str,
    tables: Iterable[str],
    writer: str,
) -> RunInfo:
    decoded = decode_fields(record)
    return RunInfo(
        run_id=run_id,
        strategy=str(decoded["strategy"]),
        created_at=created_at,
        path=path,
        metrics=dict(decoded.get("metrics") or {}),
        params=dict(decoded.get("params") or {}),
        data_versions=dict(decoded.get("data_versions") or {}),
        tags=dict(decoded.get("tags") or {}),
        extra=dict(decoded.get("extra") or {}),
        tables=tuple(sorted(tables)),
        writer=writer,
    )


def digest(data: bytes | memoryview, algorithm: str) -> str:
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return f"{algorithm}:{hasher.hexdigest()}"


def to_arrow(name: str, value: Any) -> Any:
    """An Arrow table from a pandas/polars DataFrame, a pandas Series or an Arrow table."""
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
        raise InvalidDataError(f"{name} cannot be stored as an Arrow table: {exc}") from None
    raise InvalidDataError(
        f"{name} must be a pandas or polars DataFrame, a pandas Series or an Arrow table, "
        f"got {type(value).__name__}"
    )


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


def to_datetime(value: Any, what: str) -> dt.datetime | None:
    """A time bound (datetime, date or ISO 8601 text; naive means UTC), None for None."""
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
