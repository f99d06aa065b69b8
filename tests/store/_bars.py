"""Deterministic bar batches for store tests: batch ``i`` covers minutes [i*n, (i+1)*n) and
its prices encode ``i``, so any row tells which batch (and which commit) wrote it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

EPOCH_NS = 1_600_000_000 * 10**9
MINUTE_NS = 60 * 10**9


def batch(i: int, n: int = 100, *, start_minute: int | None = None) -> pa.Table:
    first = i * n if start_minute is None else start_minute
    ts = EPOCH_NS + (first + np.arange(n, dtype=np.int64)) * MINUTE_NS
    close = np.full(n, 1000.0 + i)
    return pa.table(
        {
            "timestamp": pa.array(ts, pa.timestamp("ns", tz="UTC")),
            "open": close,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": np.full(n, float(i)),
        }
    )


def batch_ids(table: pa.Table) -> np.ndarray:
    return table.column("volume").to_numpy().astype(np.int64)
