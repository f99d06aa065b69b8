"""Many writer processes on one series: nothing lost, nothing duplicated, no version gaps."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pyarrow as pa

from efsray.store import Store
from tests.store import _workers
from tests.store._bars import batch_ids

WRITERS = 8
APPENDS = 200
ROWS = 50


def _context() -> mp.context.BaseContext:
    from tests.store._procs import context

    return context()


def check_series(root: Path, expected_batches: set[int], rows: int) -> None:
    store = Store(root)
    got = store.market.read("SPY", "1m")
    ids = batch_ids(got)
    ts = got.column("timestamp").cast(pa.int64()).to_numpy()
    assert np.all(np.diff(ts) > 0), "duplicated or unsorted timestamps"
    counts = dict(zip(*np.unique(ids, return_counts=True), strict=True))
    assert set(counts) == expected_batches, "a committed batch is missing or a stray one appeared"
    assert all(c == rows for c in counts.values()), "a batch is torn"
    # versions 1..N with no gaps, each the child of the one before
    history = store.market.history("SPY", "1m")
    versions = [h.version for h in history]
    assert versions == list(range(len(versions), 0, -1))
    series = store.layout.series_dir("SPY", "1m")
    for v in versions:
        manifest = json.loads((series / f"versions/000000/v{v:012d}.json").read_bytes())
        assert manifest["parent"] == (v - 1 or None)


def test_eight_processes_append_concurrently(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store(root)
    ctx = _context()
    per = APPENDS // WRITERS
    procs = [
        ctx.Process(
            target=_workers.append_batches,
            args=(str(root), list(range(w * per, (w + 1) * per)), ROWS, None),
        )
        for w in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"writer {p.pid} exited with {p.exitcode}"
    check_series(root, set(range(APPENDS)), ROWS)
    store = Store(root)
    appends = [h for h in store.market.history("SPY", "1m") if h.operation == "append"]
    assert len(appends) == APPENDS  # every append is exactly one version
    assert sum(h.rows_written for h in appends) == APPENDS * ROWS
    assert store.market.info("SPY", "1m").rows == APPENDS * ROWS
