"""PostgreSQL's binary COPY format for OHLCV bars, built with numpy (no per-row Python).

Rows of one series have a fixed layout (the symbol and timeframe are the same in every row),
so the whole COPY stream is one numpy structured array: field count, then for each field
its byte length and its big-endian value. ``timestamptz`` is microseconds since 2000-01-01.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from efsray.errors import InvalidDataError

__all__ = ["PG_EPOCH_NS", "encode_bars"]

PG_EPOCH_NS = 946_684_800 * 1_000_000_000  # 2000-01-01T00:00:00Z in Unix nanoseconds
_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_TRAILER = (-1).to_bytes(2, "big", signed=True)
_VALUES = ("open", "high", "low", "close", "volume")


def encode_bars(bars: pa.Table, prefix: tuple[str, ...] = ()) -> bytes:
    """The binary COPY stream for ``bars`` (timestamp + OHLCV), each row led by the text
    values ``prefix`` (e.g. symbol and timeframe). Columns, in order: the prefix, ts, open,
    high, low, close, volume.

    Timestamps must be whole microseconds (PostgreSQL's resolution): InvalidDataError
    otherwise, rather than silently truncating.
    """
    n = bars.num_rows
    ts_ns = bars.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
    if n and bool(np.any(ts_ns % 1000)):
        i = int(np.flatnonzero(ts_ns % 1000)[0])
        raise InvalidDataError(
            f"{int(np.count_nonzero(ts_ns % 1000))} bar(s) have sub-microsecond timestamps "
            f"(first: {bars.column('timestamp')[i].as_py()} = {int(ts_ns[i])} ns); PostgreSQL "
            "stores microseconds. Round the timestamps before exporting"
        )
    encoded = [p.encode() for p in prefix]
    fields: list[tuple[str, str]] = [("count", ">i2")]
    for k, text in enumerate(encoded):
        fields += [(f"plen{k}", ">i4"), (f"p{k}", f"S{len(text)}" if text else "V0")]
    fields += [("tslen", ">i4"), ("ts", ">i8")]
    for name in _VALUES:
        fields += [(f"{name}len", ">i4"), (name, ">f8")]
    rows = np.empty(n, dtype=np.dtype(fields))
    rows["count"] = len(prefix) + 1 + len(_VALUES)
    for k, text in enumerate(encoded):
        rows[f"plen{k}"] = len(text)
        if text:
            rows[f"p{k}"] = text
    rows["tslen"] = 8
    rows["ts"] = (ts_ns - PG_EPOCH_NS) // 1000
    for name in _VALUES:
        rows[f"{name}len"] = 8
        rows[name] = bars.column(name).combine_chunks().cast(pa.float64()).to_numpy()
    return _HEADER + rows.tobytes() + _TRAILER
