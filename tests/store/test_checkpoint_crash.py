"""Checkpoint savers killed with SIGKILL at random instants.

Invariants: every version that lists (or that ``latest`` finds) loads and verifies, and holds
exactly what its saver meant to save; versions stay gap-free; every save whose commit was
acknowledged is there; the debris of the killed savers is only temporary files and
unreferenced data directories, which cleanup removes without touching any version.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from efsray.store import Store
from efsray.store.nfs import is_temp_name
from tests.store import _ckpt_workers as w

KILLS = int(os.environ.get("EFSRAY_TEST_KILLS", "200"))


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


def test_sigkilled_savers_never_leave_a_broken_version(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    sources: dict[int, str] = {}
    source_paths = []
    for i in range(3):
        path = tmp_path / f"src{i}"
        sources[i] = w.make_source_dir(path, f"src{i}", files=6, size=100_000)
        source_paths.append(str(path))
    ctx = w.fork_context()
    rng = random.Random(int(os.environ.get("EFSRAY_TEST_SEED", "20261128")))
    acknowledged: set[int] = set()
    checked: set[int] = set()
    save_time = 0.01
    started = time.monotonic()
    for kill in range(KILLS):
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
            _check_version(store, v, sources, tmp_path / f"check{kill}")
            checked.add(v)
    elapsed = time.monotonic() - started

    latest = store.checkpoints.latest_version(w.MODEL)
    assert latest is not None and latest >= KILLS // 4, "savers made too little progress"
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
        _check_version(store, v, sources, tmp_path / f"final{v}")
    data_dirs = list((model_dir / "data").glob("*/*"))
    assert len(data_dirs) == len(kept), "unreferenced data directories were left behind"
    print(f"{KILLS} kills in {elapsed:.1f} s, {latest} versions, {len(acknowledged)} "
          f"acknowledged, {len(debris)} temp files cleaned")  # fmt: skip
