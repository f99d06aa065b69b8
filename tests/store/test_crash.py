"""Writers killed with SIGKILL at random instants, while a reader reads throughout.

Invariants: a reader never sees a torn or partial batch; every append whose commit was
acknowledged is present, complete and unique; versions stay gap-free; the series stays
readable after every kill. Kills land at random points of the write path: while the segment
is written, between segment and manifest, during the link, during the HEAD update, and during
the merges that appends trigger.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import numpy as np

from efsray.store import Store
from efsray.store.nfs import is_temp_name
from tests.store import _workers
from tests.store._bars import batch_ids
from tests.store.test_concurrency import _context, check_series

KILLS = int(os.environ.get("EFSRAY_TEST_KILLS", "200"))
ROWS = 40


def test_sigkill_writers_never_tear_and_never_lose_commits(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store(root, merge_factor=4)  # merge often: more rewrites for the kills to hit
    ctx = _context()
    rng = random.Random(int(os.environ.get("EFSRAY_TEST_SEED", "20261128")))
    stop = ctx.Event()
    reader_in, reader_out = ctx.Pipe(duplex=False)
    reader = ctx.Process(
        target=_workers.read_until_stopped, args=(str(root), ROWS, stop, reader_out)
    )
    reader.start()

    acknowledged: set[int] = set()
    attempted: set[int] = set()
    append_time = 0.01  # running estimate of one append's duration, seconds
    next_batch = 0
    for _ in range(KILLS):
        ids = list(range(next_batch, next_batch + 10_000))
        next_batch += 10_000
        recv, send = ctx.Pipe(duplex=False)
        writer = ctx.Process(target=_workers.append_batches, args=(str(root), ids, ROWS, send))
        writer.start()
        send.close()
        # Wait for the first acknowledged commit (the writer is in its loop), then let it run
        # for a random fraction of a few appends and kill it wherever it is.
        assert recv.poll(60), "writer made no commit within 60 s"
        first_at = time.monotonic()
        i, _ = recv.recv()
        acknowledged.add(i)
        n_acks = 1
        deadline = time.monotonic() + rng.uniform(0, 3 * append_time)
        while (left := deadline - time.monotonic()) > 0 and recv.poll(left):
            i, _ = recv.recv()
            acknowledged.add(i)
            n_acks += 1
        writer.kill()
        writer.join(10)
        assert writer.exitcode == -9
        while recv.poll():
            try:
                i, _ = recv.recv()
            except EOFError:
                break
            acknowledged.add(i)
            n_acks += 1
        attempted.update(ids[: n_acks + 1])
        if n_acks > 1:
            append_time = 0.7 * append_time + 0.3 * (time.monotonic() - first_at) / n_acks
        recv.close()

    stop.set()
    assert reader_in.poll(60)
    reads, problems = reader_in.recv()
    reader.join(10)
    assert problems == [], problems
    assert reads > 0

    store = Store(root)
    stored = set(np.unique(batch_ids(store.market.read("SPY", "1m"))).tolist())
    assert acknowledged <= stored, (
        f"lost acknowledged commits: {sorted(acknowledged - stored)[:10]}"
    )
    assert stored <= attempted
    check_series(root, stored, ROWS)
    # Debris of the killed writers is only ever temporary files or unreferenced segments.
    series = store.layout.series_dir("SPY", "1m")
    leftovers = [p for p in series.rglob("*") if p.is_file() and is_temp_name(p.name)]
    print(
        f"{KILLS} kills, {len(acknowledged)} acknowledged appends, {reads} clean reads, "
        f"{len(leftovers)} temporary files left for cleanup"
    )
