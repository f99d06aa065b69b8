"""Process targets for the concurrency and crash tests (importable by child processes)."""

from __future__ import annotations

from multiprocessing.connection import Connection

from efsray.store import Store
from tests.store._bars import batch


def append_batches(root: str, batch_ids: list[int], n: int, conn: Connection | None) -> None:
    """Append each batch; report ``(batch_id, version)`` after each commit returns."""
    store = Store(root)
    for i in batch_ids:
        info = store.market.append("SPY", "1m", batch(i, n))
        if conn is not None:
            conn.send((i, info.version))


def compact_forever(root: str, conn: Connection) -> None:
    store = Store(root)
    while True:
        info = store.market.compact("SPY", "1m")
        conn.send(("compact", info.version if info else None))


def read_until_stopped(root: str, rows: int, stop, conn: Connection) -> None:
    """Read the series over and over while writers die around it; report any torn state."""
    import numpy as np
    import pyarrow as pa

    from efsray.errors import NotFoundError
    from tests.store._bars import batch_ids

    store = Store(root)
    reads = 0
    problems: list[str] = []
    while not stop.is_set():
        try:
            full = store.market.read("SPY", "1m")
            tail = store.market.tail("SPY", "1m", rows * 3 + rows // 2)
        except NotFoundError:
            continue  # nothing committed yet
        for name, table, skip_first in (("read", full, False), ("tail", tail, True)):
            ts = table.column("timestamp").cast(pa.int64()).to_numpy()
            if not np.all(np.diff(ts) > 0):
                problems.append(f"{name}: timestamps not strictly increasing")
            ids, counts = np.unique(batch_ids(table), return_counts=True)
            for i, c in zip(ids, counts, strict=True):
                if c != rows and not (skip_first and i == batch_ids(table)[0]):
                    problems.append(f"{name}: batch {i} has {c} of {rows} rows")
        reads += 1
    conn.send((reads, problems[:20]))
