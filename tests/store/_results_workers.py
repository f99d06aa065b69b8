"""Process targets for the results-table concurrency and crash tests."""

from __future__ import annotations

import datetime as dt
import traceback
from typing import Any

T0 = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)


def run_id(batch: int, i: int) -> str:
    """The chosen id of run ``i`` of batch ``batch``: batches are disjoint id ranges."""
    from efsray.store.ids import derive

    return derive(T0 + dt.timedelta(milliseconds=batch * 1000 + i), f"b{batch}/{i}")


def batch_runs(batch: int, size: int) -> list[dict[str, Any]]:
    import numpy as np
    import pandas as pd

    return [
        {
            "run_id": run_id(batch, i),
            "metrics": {"sharpe": batch + i / 1000, "batch": batch, "i": i},
            "params": {"fast": i % 7, "slow": 20 + i % 5},
            "tags": {"batch": batch},
            "equity_curve": pd.DataFrame({"equity": np.linspace(1.0, 1.0 + i / 100, 50)}),
        }
        for i in range(size)
    ]


def save_batches(root: str, batches: list[int], size: int, go: Any, conn: Any) -> None:
    """Commit each batch; report the run ids each call returned."""
    try:
        from efsray.store import Store

        store = Store(root, create=False)
        go.wait(30)
        out = []
        for b in batches:
            infos = store.results.save_batch("sweep", batch_runs(b, size))
            out.append([i.run_id for i in infos])
        conn.send(("ok", out))
    except BaseException:
        conn.send(("error", traceback.format_exc()))


def save_batches_forever(root: str, size: int, conn: Any = None) -> None:
    """Commit batch 0, 1, 2, ... until killed; one message on ``conn`` after each commit."""
    from efsray.store import Store

    store = Store(root, create=False)
    b = 0
    while True:
        store.results.save_batch("sweep", batch_runs(b, size))
        if conn is not None:
            conn.send(b)
        b += 1


def vacuum_forever(root: str, conn: Any) -> None:
    """Vacuum the table with no grace, again and again until killed; one message a pass."""
    from efsray.store import Store

    store = Store(root, create=False)
    passes = 0
    while True:
        try:
            store.results.vacuum("sweep", grace=0)
        except BaseException:
            conn.send(("error", traceback.format_exc()))
            return
        passes += 1
        conn.send(("pass", passes))


def query_forever(root: str, conn: Any) -> None:
    """Query the latest version of the table again and again until killed; one message a
    pass (or the error, and stop)."""
    from efsray.store import Store

    store = Store(root, create=False)
    passes = 0
    while True:
        try:
            rows = store.results.query("sweep")
            if len(rows) != 24 * 20:
                raise AssertionError(f"{len(rows)} rows")
        except BaseException:
            conn.send(("error", traceback.format_exc()))
            return
        passes += 1
        conn.send(("pass", passes))
