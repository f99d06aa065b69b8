"""OHLCV bars: accept what users have, validate it, and normalize it to one Arrow schema.

Accepted inputs: a pyarrow Table or RecordBatch, a pandas or polars DataFrame (a pandas
DatetimeIndex counts as the timestamp column), a list of bar dicts, a dict of columns, or one
bar as a dict of scalars. Column names are matched case-insensitively; ``ts``, ``time``,
``date`` and ``datetime`` mean ``timestamp``, ``vol`` means ``volume``. An unnamed first
column (pandas' default ``to_csv()`` writes its index so) is the timestamp, unless another
column is; ``column_map`` can name it as ``""``.

The normalized table has ``timestamp`` as ``timestamp[ns, tz=UTC]``, then ``open``, ``high``,
``low``, ``close``, ``volume`` and any extra numeric columns, all float64, sorted by time.

Rules (every violation is an :class:`InvalidDataError` naming the column, the first bad row
and its values; nothing is written):
- timestamps are present, not null and parse; timezone-aware ones are converted to UTC,
  naive ones are taken in ``naive_tz`` (UTC by default); integer epochs are seconds, ms, us
  or ns, given by ``timestamp_unit`` or inferred when every value has the same magnitude;
- a batch never repeats a timestamp (ambiguous). Against stored data the rule is
  "newest write wins": a bar whose timestamp is already stored replaces the stored bar;
- prices are finite numbers, ``high >= max(open, close)``, ``low <= min(open, close)``;
- volume is a finite number ``>= 0``; extra columns are numeric (nulls allowed).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from efsray.errors import InvalidDataError

__all__ = ["CORE_COLUMNS", "PRICE_COLUMNS", "TIMESTAMP_TYPE", "normalize_bars", "to_table"]

TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")
PRICE_COLUMNS = ("open", "high", "low", "close")
CORE_COLUMNS = ("timestamp", *PRICE_COLUMNS, "volume")
_ALIASES = {
    "ts": "timestamp",
    "time": "timestamp",
    "date": "timestamp",
    "datetime": "timestamp",
    "vol": "volume",
}
_UNITS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# Inclusive-exclusive magnitude bands for inferring an integer epoch's unit (1973-5138 AD).
_UNIT_BANDS = (
    ("s", 10**8, 10**11),
    ("ms", 10**11, 10**14),
    ("us", 10**14, 10**17),
    ("ns", 10**17, 10**20),
)
_PANDAS_INDEX = ("", "unnamed: 0")  # the unnamed index column of pandas' to_csv / read_csv
_EXTRA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")


def to_table(data: Any) -> pa.Table:
    """Turn any accepted input into a pyarrow Table (no validation yet)."""
    try:
        return _to_table(data)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        if isinstance(exc, InvalidDataError):
            raise
        raise InvalidDataError(f"could not read the bars as a table: {exc}") from None


def _to_table(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    module = type(data).__module__
    if module.startswith("pandas") and hasattr(data, "reset_index"):
        import pandas as pd

        frame = data
        if isinstance(frame.index, pd.DatetimeIndex):
            names = {str(c).lower() for c in frame.columns}
            if not names & ({"timestamp"} | {k for k, v in _ALIASES.items() if v == "timestamp"}):
                frame = frame.reset_index(names="timestamp")
        return _from_pandas(frame)
    if module.startswith("polars") and hasattr(data, "to_arrow"):
        return data.to_arrow()
    if isinstance(data, list | tuple):
        if not all(isinstance(row, Mapping) for row in data):
            raise InvalidDataError(
                "a list of bars must hold dicts like {'timestamp': ..., 'open': ..., ...}"
            )
        return pa.Table.from_pylist([dict(row) for row in data])
    if isinstance(data, Mapping):
        values = list(data.values())
        if values and all(np.ndim(v) == 0 for v in values):  # one bar as a dict of scalars
            return pa.Table.from_pylist([dict(data)])
        return pa.table({str(k): v for k, v in data.items()})
    raise InvalidDataError(
        f"cannot read bars from a {type(data).__name__}; pass a pandas or polars DataFrame, "
        "a pyarrow Table, a list of bar dicts or a dict of columns"
    )


def _from_pandas(frame: Any) -> pa.Table:
    """A pandas DataFrame as a Table, one column at a time: plain numeric columns and
    timezone-aware timestamps are wrapped straight from their NumPy arrays, about ten times
    quicker on a typical batch than ``Table.from_pandas`` with its metadata and NaN scans."""
    import pandas as pd

    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise InvalidDataError(f"column(s) {', '.join(duplicated)} appear more than once")
    columns: dict[str, pa.Array] = {}
    for i, name in enumerate(names):
        values = _column_values(frame, i)
        dtype = values.dtype
        if isinstance(values, np.ndarray) and dtype.kind in "fiu":
            # NaN means missing in pandas: null (as Table.from_pandas has it), then refused
            # in a price and allowed in an extra column
            missing = dtype.kind == "f" and bool(np.isnan(values).any())
            columns[name] = pa.array(values, from_pandas=missing)
            continue
        if isinstance(dtype, pd.DatetimeTZDtype):
            # the int64 values of any zone's timestamps are UTC instants (NaT is the minimum)
            instants = np.ascontiguousarray(values.asi8)
            if not (instants == _NAT).any():
                columns[name] = pa.Array.from_buffers(
                    pa.timestamp(dtype.unit, tz="UTC"),
                    len(instants),
                    [None, pa.py_buffer(instants)],
                )
                continue
        # naive datetimes, strings, nullable and object columns, timestamps with NaT
        columns[name] = pa.Array.from_pandas(frame.iloc[:, i])
    return pa.table(columns)


_NAT = np.iinfo(np.int64).min


def _column_values(frame: Any, i: int) -> Any:
    """The values of ``frame``'s column ``i`` (a NumPy array or a pandas extension array),
    without boxing them in a Series (pandas' own accessor, when this pandas has it)."""
    get = getattr(frame, "_get_column_array", None)
    if get is not None:
        return get(i)
    series = frame.iloc[:, i]
    return series.to_numpy() if isinstance(series.dtype, np.dtype) else series.array


def normalize_bars(
    data: Any,
    *,
    column_map: Mapping[str, str] | None = None,
    naive_tz: str = "UTC",
    timestamp_unit: str | None = None,
    timestamp_format: str | None = None,
) -> pa.Table:
    """Validate ``data`` as OHLCV bars and return the normalized, time-sorted table."""
    _check_timestamp_options(timestamp_unit, timestamp_format)
    table = _rename(to_table(data), column_map or {})
    if table.num_rows == 0:
        raise InvalidDataError("the bars have no rows; there is nothing to write")
    missing = [c for c in CORE_COLUMNS if c not in table.column_names]
    if missing:
        raise InvalidDataError(
            f"missing column(s) {', '.join(missing)}; found {', '.join(table.column_names)}. "
            "Map vendor column names with column_map (CLI: --map 'Date=timestamp')"
        )
    ts = _timestamps(table.column("timestamp"), naive_tz, timestamp_unit, timestamp_format)
    columns: dict[str, pa.Array] = {"timestamp": ts}
    for name in (*PRICE_COLUMNS, "volume"):
        columns[name] = _numeric(table.column(name), name, allow_null=False)
    for name in table.column_names:
        if name not in columns:
            if not _EXTRA_NAME.fullmatch(name):
                raise InvalidDataError(
                    f"extra column name {name!r} is not allowed; use letters, digits, _ . - "
                    "(at most 64, starting with a letter or _)"
                )
            columns[name] = _numeric(table.column(name), name, allow_null=True)
    out = pa.table(columns)
    _check_values(out)
    if _strictly_increasing(ts):  # the usual batch: already in order, nothing repeated
        return out
    out = out.take(pc.sort_indices(out.column("timestamp")))
    _check_unique(out.column("timestamp"))
    return out


def _strictly_increasing(ts: pa.Array) -> bool:
    values = ts.view(pa.int64()).to_numpy()
    return bool(np.all(values[1:] > values[:-1]))


# The directives strptime knows (Python 3.11); anything else after a '%' is a typo.
_STRPTIME_DIRECTIVE = re.compile(r"%([aAwdbBmyYHIpMSfzZjUWcxXGuV%]|:z)")


def _check_timestamp_options(unit: str | None, fmt: str | None) -> None:
    """Refuse a bad unit or format up front: either could otherwise go unused in silence
    (ISO strings need neither), and the user would never learn the value was wrong."""
    if unit is not None and unit not in _UNITS:
        raise InvalidDataError(
            f"timestamp_unit {unit!r} is not one of s, ms, us, ns (CLI: --timestamp-unit)"
        )
    if fmt is not None:
        rest = _STRPTIME_DIRECTIVE.sub("", fmt)
        if "%" in rest or rest == fmt:
            bad = rest[rest.index("%") :][:2] if "%" in rest else fmt
            raise InvalidDataError(
                f"timestamp_format {fmt!r} is not a strptime format ({bad!r} is not a "
                "directive); e.g. '%m/%d/%Y %H:%M:%S' (CLI: --timestamp-format)"
            )


def _rename(table: pa.Table, column_map: Mapping[str, str]) -> pa.Table:
    lowered_map = {str(k).strip().lower(): str(v).strip().lower() for k, v in column_map.items()}
    try:
        raw_names = table.column_names
    except UnicodeDecodeError as exc:
        raise InvalidDataError(
            f"the column names are not UTF-8 (byte 0x{exc.object[exc.start]:02x}); the file is "
            "probably latin-1 or cp1252: read it with that encoding (CLI: --encoding latin-1) "
            "or save it as UTF-8"
        ) from None
    names = []
    for raw in raw_names:
        name = str(raw).strip().lower()
        name = lowered_map.get(name, name)
        names.append(_ALIASES.get(name, name))
    if names and names[0] in _PANDAS_INDEX:
        # pandas' default to_csv() writes the index first, unnamed. Bars' index is their time;
        # any other index (0, 1, 2, ...) means nothing once a column holds the time.
        if "timestamp" in names[1:]:
            table, names = table.remove_column(0), names[1:]
        else:
            names[0] = "timestamp"
    seen: dict[str, str] = {}
    for raw, name in zip(table.column_names, names, strict=True):
        if name in seen:
            raise InvalidDataError(
                f"columns {seen[name]!r} and {raw!r} both mean {name!r}; drop or rename one"
            )
        seen[name] = raw
    return table.rename_columns(names)


def _timestamps(
    column: pa.ChunkedArray, naive_tz: str, unit: str | None, fmt: str | None
) -> pa.Array:
    arr = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if arr.null_count:
        row = int(pc.index(pc.is_null(arr), True).as_py())
        raise InvalidDataError(f"timestamp is missing (null) in row {row}; every bar needs one")
    t = arr.type
    if pa.types.is_timestamp(t):
        if t.tz is None:
            return _localize(arr, naive_tz)
        return _cast_ts(arr)
    if pa.types.is_date(t):
        return _localize(arr.cast(pa.timestamp("ms")), naive_tz)
    if pa.types.is_integer(t):
        if fmt is not None:  # e.g. 20240131 read from a CSV, with --timestamp-format %Y%m%d
            return _parse_strings(arr.cast(pa.string()), naive_tz, fmt)
        return _from_epoch(arr, unit)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _parse_strings(arr, naive_tz, fmt)
    raise InvalidDataError(
        f"timestamp column has type {t}; use datetimes, ISO-8601 strings or integer epochs"
    )


def _cast_ts(arr: pa.Array) -> pa.Array:
    if arr.type == TIMESTAMP_TYPE:
        return arr
    try:
        return arr.cast(TIMESTAMP_TYPE)
    except pa.ArrowInvalid as exc:
        raise InvalidDataError(
            f"timestamps out of range for nanoseconds (1677-2262): {exc}"
        ) from None


def _localize(arr: pa.Array, naive_tz: str) -> pa.Array:
    if naive_tz in ("UTC", "utc", "Z"):
        return _cast_ts(arr.cast(pa.timestamp(arr.type.unit, tz="UTC")))
    import pandas as pd

    try:
        series = pd.Series(arr.to_pandas()).dt.tz_localize(
            naive_tz, ambiguous="raise", nonexistent="raise"
        )
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds here
        raise InvalidDataError(
            f"cannot read naive timestamps as {naive_tz!r} time: {str(exc).splitlines()[0]}. "
            "Pass timezone-aware timestamps, or another --tz"
        ) from None
    return _cast_ts(pa.Array.from_pandas(series.dt.tz_convert("UTC")))


def _from_epoch(arr: pa.Array, unit: str | None) -> pa.Array:
    values = arr.to_numpy(zero_copy_only=False).astype(np.int64)
    if unit is None:
        mag = np.abs(values)
        for name, lo, hi in _UNIT_BANDS:
            if bool(np.all((mag >= lo) & (mag < hi))):
                unit = name
                break
        else:
            raise InvalidDataError(
                "integer timestamps mix magnitudes (or are before 1973), so their unit is "
                f"ambiguous (first value {int(values[0])}); pass timestamp_unit='s', 'ms', "
                "'us' or 'ns' (CLI: --timestamp-unit)"
            )
    if unit not in _UNITS:
        raise InvalidDataError(f"timestamp_unit {unit!r} is not one of s, ms, us, ns")
    scale = _UNITS[unit]
    limit = np.iinfo(np.int64).max // scale
    if bool(np.any(np.abs(values) > limit)):
        raise InvalidDataError(f"integer timestamps in {unit} overflow nanoseconds (after 2262)")
    return pa.array(values * scale, type=TIMESTAMP_TYPE)


def _parse_strings(arr: pa.Array, naive_tz: str, fmt: str | None) -> pa.Array:
    import pandas as pd

    values = arr.to_pandas()
    try:
        parsed = pd.to_datetime(values, format=fmt or "ISO8601")
    except (ValueError, TypeError) as exc:
        raise InvalidDataError(
            f"cannot parse timestamps as {'ISO-8601' if fmt is None else repr(fmt)}: "
            f"{str(exc).splitlines()[0].rstrip('.')}. "
            "Pass timestamp_format (CLI: --timestamp-format '%m/%d/%Y %H:%M')"
        ) from None
    if not isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return _localize(pa.Array.from_pandas(parsed), naive_tz)
    return _cast_ts(pa.Array.from_pandas(parsed.dt.tz_convert("UTC")))


def _numeric(column: pa.ChunkedArray, name: str, *, allow_null: bool) -> pa.Array:
    arr = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    t = arr.type
    if pa.types.is_null(t) and allow_null:
        return pa.nulls(len(arr), pa.float64())
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        raise InvalidDataError(
            f"column {name!r} has type {t}; it must be numeric (convert strings to numbers)"
        )
    if not allow_null and arr.null_count:
        row = int(pc.index(pc.is_null(arr), True).as_py())
        raise InvalidDataError(f"column {name!r} is missing (null) in row {row}")
    if t == pa.float64():
        return arr
    # Integers beyond 2**53 (a uint64 volume) have no exact float64: round to the nearest,
    # as every float does, rather than refuse the file (the schema is float64 throughout).
    return arr.cast(pa.float64(), safe=not pa.types.is_integer(t))


def _check_values(table: pa.Table) -> None:
    ts = table.column("timestamp")
    o, h, lo, c, v = (
        table.column(n).to_numpy() for n in ("open", "high", "low", "close", "volume")
    )
    # One pass for the usual, valid batch: a comparison with NaN is false, so these hold
    # only if high, low and volume are finite and low <= open, close <= high (finite too).
    if (
        ((h >= np.maximum(o, c)) & (lo <= np.minimum(o, c)) & (v >= 0)).all()
        and np.isfinite(h).all()
        and np.isfinite(lo).all()
        and np.isfinite(v).all()
    ):
        return

    def fail(mask: np.ndarray, what: str) -> None:
        bad = np.flatnonzero(mask)
        if bad.size == 0:
            return
        i = int(bad[0])
        raise InvalidDataError(
            f"{bad.size} bar(s) {what}; first at row {i} (timestamp {ts[i].as_py()}): "
            f"open={o[i]:g}, high={h[i]:g}, low={lo[i]:g}, close={c[i]:g}, volume={v[i]:g}"
        )

    for name, values in (("open", o), ("high", h), ("low", lo), ("close", c)):
        fail(~np.isfinite(values), f"have a non-finite {name} (NaN or infinity)")
    fail(~np.isfinite(v), "have a non-finite volume (NaN or infinity)")
    fail(v < 0, "have a negative volume")
    fail(h < np.maximum(o, c), "have high below max(open, close)")
    fail(lo > np.minimum(o, c), "have low above min(open, close)")


def _check_unique(ts: pa.ChunkedArray) -> None:
    values = ts.combine_chunks().cast(pa.int64()).to_numpy()
    dup = np.flatnonzero(values[1:] == values[:-1])
    if dup.size:
        first = ts[int(dup[0])].as_py()
        raise InvalidDataError(
            f"timestamp {first} appears more than once in this batch ({dup.size} repeats in "
            "all); a batch must not repeat a timestamp. (A bar whose timestamp is already "
            "stored is fine: it replaces the stored bar.)"
        )
