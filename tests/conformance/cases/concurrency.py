"""Many writer processes, and writers killed with SIGKILL at random instants.

Appends: nothing lost, nothing duplicated, no version gaps, every version the child of the
one before; a reader that reads throughout never sees a torn or partial batch; every append
whose commit was acknowledged is present, complete and unique. Checkpoints: distinct,
gap-free versions; every version that lists loads, verifies and holds what its saver saved;
the killed savers' debris is only what cleanup removes.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from efsray.store import Store
from efsray.store.nfs import is_temp_name
from tests.conformance.site import Site, case
from tests.store import _ckpt_workers as w
from tests.store import _workers
from tests.store._bars import batch_ids
from tests.store._procs import context

WRITERS = 8
APPENDS = 200
ROWS = 50
KILL_ROWS = 40
SEED = 20261128


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


@case("concurrency", needs=("processes",))
def eight_processes_append_concurrently(site: Site, appends: int = APPENDS) -> None:
    root = site.root
    Store(root)
    ctx = context()
    per = appends // WRITERS
    procs = [
        ctx.Process(
            target=_workers.append_batches,
            args=(str(root), list(range(i * per, (i + 1) * per)), ROWS, None),
        )
        for i in range(WRITERS)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"writer {p.pid} exited with {p.exitcode}"
    check_series(root, set(range(per * WRITERS)), ROWS)
    store = Store(root)
    appended = [h for h in store.market.history("SPY", "1m") if h.operation == "append"]
    assert len(appended) == per * WRITERS  # every append is exactly one version
    assert sum(h.rows_written for h in appended) == per * WRITERS * ROWS
    assert store.market.info("SPY", "1m").rows == per * WRITERS * ROWS


@case("concurrency", needs=("processes",))
def sigkill_writers_never_tear_and_never_lose_commits(site: Site) -> None:
    """Kills land at random points of the write path: while the segment is written, between
    segment and manifest, during the link, during the HEAD update, and during the merges
    that appends trigger."""
    root = site.root
    Store(root, merge_factor=4)  # merge often: more rewrites for the kills to hit
    ctx = context()
    rng = random.Random(SEED)
    stop = ctx.Event()
    reader_in, reader_out = ctx.Pipe(duplex=False)
    reader = ctx.Process(
        target=_workers.read_until_stopped, args=(str(root), KILL_ROWS, stop, reader_out)
    )
    reader.start()

    acknowledged: set[int] = set()
    attempted: set[int] = set()
    append_time = 0.01  # running estimate of one append's duration, seconds
    next_batch = 0
    for _ in range(site.kills):
        ids = list(range(next_batch, next_batch + 10_000))
        next_batch += 10_000
        recv, send = ctx.Pipe(duplex=False)
        writer = ctx.Process(target=_workers.append_batches, args=(str(root), ids, KILL_ROWS,
                                                                    send))  # fmt: skip
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
    check_series(root, stored, KILL_ROWS)
    series = store.layout.series_dir("SPY", "1m")
    leftovers = [p for p in series.rglob("*") if p.is_file() and is_temp_name(p.name)]
    print(
        f"{site.kills} kills, {len(acknowledged)} acknowledged appends, {reads} clean reads, "
        f"{len(leftovers)} temporary files left for cleanup"
    )


@case("concurrency", needs=("processes",))
def eight_checkpoint_savers_get_distinct_gap_free_versions(site: Site) -> None:
    root = site.root
    Store(root)
    ctx = w.fork_context()
    go = ctx.Event()
    writers, count = 8, 6
    pipes, procs = [], []
    for writer in range(writers):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=w.save_many, args=(str(root), writer, count, 50_000, go, send))
        p.start()
        procs.append(p)
        pipes.append(recv)
    go.set()
    versions = [v for answer in w.gather(pipes, procs) for v in answer]
    assert sorted(versions) == list(range(1, writers * count + 1))
    store = Store(root)
    for v in versions:
        data, info = store.checkpoints.load_bytes(w.MODEL, v)
        assert data == w.expected_content(info.metadata)


def _check_version(store: Store, version: int, sources: dict[int, str], tmp: Path) -> None:
    info = store.checkpoints.verify(w.MODEL, version)  # every byte against its checksum
    meta = info.metadata
    if meta.get("kind") == "dir":
        out = tmp / f"v{version}"
        store.checkpoints.load_directory(w.MODEL, out, version)
        assert w.tree_hash(out) == sources[meta["source"]], f"v{version} differs from its source"
    else:
        data, _ = store.checkpoints.load_bytes(w.MODEL, version)
        assert data == w.expected_content(meta), f"v{version} holds the wrong bytes"


@case("concurrency", needs=("processes",))
def sigkilled_checkpoint_savers_never_leave_a_broken_version(site: Site) -> None:
    root = site.root
    store = Store(root)
    sources: dict[int, str] = {}
    source_paths = []
    for i in range(3):
        path = site.scratch / f"src{i}"
        sources[i] = w.make_source_dir(path, f"src{i}", files=6, size=100_000)
        source_paths.append(str(path))
    ctx = w.fork_context()
    rng = random.Random(SEED)
    acknowledged: set[int] = set()
    checked: set[int] = set()
    save_time = 0.01
    started = time.monotonic()
    for kill in range(site.kills):
        recv, send = ctx.Pipe(duplex=False)
        saver = ctx.Process(target=w.save_forever, args=(str(root), kill, source_paths, send))
        saver.start()
        send.close()
        # Kill at a random instant within the first few saves: inside write_temp, between
        # files, between the files and the manifest, during the link, before HEAD.
        deadline = time.monotonic() + rng.uniform(0, 3 * save_time)
        acks = 0
        first = time.monotonic()
        while (left := deadline - time.monotonic()) > 0 and recv.poll(left):
            acknowledged.add(recv.recv())
            acks += 1
        saver.kill()
        saver.join(10)
        assert saver.exitcode == -9
        while recv.poll():
            try:
                acknowledged.add(recv.recv())
            except EOFError:
                break
        recv.close()
        if acks:
            save_time = 0.7 * save_time + 0.3 * (time.monotonic() - first) / acks
        else:
            save_time = min(save_time * 1.2, 0.2)
        # Whatever lists or is latest now must load completely and correctly.
        latest = store.checkpoints.latest_version(w.MODEL)
        if latest is None:
            continue
        listed = [i.version for i in store.checkpoints.list(w.MODEL)]
        assert listed == list(range(1, latest + 1)), "versions have gaps"
        for v in sorted({v for v in listed if v not in checked} | {latest}):
            _check_version(store, v, sources, site.scratch / f"check{kill}")
            checked.add(v)
    elapsed = time.monotonic() - started

    latest = store.checkpoints.latest_version(w.MODEL)
    assert latest is not None and latest >= site.kills // 4, "savers made too little progress"
    assert acknowledged <= set(range(1, latest + 1))
    model_dir = store.layout.checkpoints / w.MODEL
    debris = [p for p in model_dir.rglob("*") if is_temp_name(p.name)]
    # Cleanup (with the grace period over) removes the debris and keeps every version.
    report = store.cleanup(days=0, now=time.time() + 7200, grace=3600)
    assert report.errors == ()
    remaining = [p for p in model_dir.rglob("*") if is_temp_name(p.name)]
    assert remaining == []
    kept = [i.version for i in store.checkpoints.list(w.MODEL)]
    assert kept[-5:] == list(range(latest - 4, latest + 1))  # default policy: keep last 5
    for v in kept:
        _check_version(store, v, sources, site.scratch / f"final{v}")
    data_dirs = list((model_dir / "data").glob("*/*"))
    assert len(data_dirs) == len(kept), "unreferenced data directories were left behind"
    print(f"{site.kills} kills in {elapsed:.1f} s, {latest} versions, {len(acknowledged)} "
          f"acknowledged, {len(debris)} temp files cleaned")  # fmt: skip
