"""Vacuum of a results table: superseded versions and merged-away segments go after the
grace period; the latest version, what it names, and files no version named stay; a
writer committing meanwhile loses nothing, and a vacuum killed at any instant leaves the
table readable."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from efsray.errors import InvalidDataError
from efsray.store import Store
from tests.store import _ckpt_workers as w
from tests.store import _results_workers as rw


def _table(root: Path) -> Path:
    return root / "results" / "tables" / "sweep"


def _versions(root: Path) -> list[int]:
    return sorted(int(p.name[1:-5]) for p in (_table(root) / "versions").rglob("v*.json"))


def _named(root: Path, version: int) -> set[str]:
    [path] = [p for p in (_table(root) / "versions").rglob("v*.json")
              if int(p.name[1:-5]) == version]  # fmt: skip
    body = json.loads(path.read_text())
    return {n for s in body["segments"]
            for n in (s["name"], *([s["sidecar"]["name"]] if s["sidecar"] else []))}  # fmt: skip


def test_vacuum_leaves_the_latest_version_what_it_names_and_unnamed_files(
    tmp_path: Path,
) -> None:
    root = tmp_path / "store"
    store = Store(root)
    for b in range(24):
        store.results.save_batch("sweep", rw.batch_runs(b, 20))
    before = _versions(root)
    assert len(before) > 24  # one per batch and one per merge
    stray = _table(root) / "data" / "never-committed.parquet"
    stray.write_bytes(b"a killed writer's batch")
    os.utime(stray, (0, 0))  # old: only prune's long grace may remove it
    assert store.results.vacuum("sweep", grace=3600) == (0, 0)  # all within the grace
    files, nbytes = store.results.vacuum("sweep", grace=0)
    assert files > 24 and nbytes > 0
    latest = before[-1]
    assert _versions(root) == [latest]
    data = {p.name for p in (_table(root) / "data").iterdir()}
    assert data == _named(root, latest) | {stray.name}
    fresh = Store(root).results
    assert len(fresh.query("sweep")) == 24 * 20
    assert fresh.load(rw.run_id(5, 7), strategy="sweep").info.metrics["batch"] == 5
    assert fresh.vacuum("sweep", grace=0) == (0, 0)  # nothing more to do
    store.results.save_batch("sweep", rw.batch_runs(24, 20))  # the log goes on, no gap
    assert _versions(root)[0] == latest  # the log goes on from the latest, no gap
    with pytest.raises(InvalidDataError, match="grace"):
        store.results.vacuum("sweep", grace=-1)


def test_a_version_superseded_within_the_grace_stays_readable(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(root)
    store.results.merge_after_commit = False
    for b in range(4):
        store.results.save_batch("sweep", rw.batch_runs(b, 10))
    assert store.results.merge("sweep") == 1  # v5 replaces the four segments by one
    store.results.vacuum("sweep", grace=3600)
    assert _versions(root) == [1, 2, 3, 4, 5]
    assert len(Store(root).results.query("sweep", version=2)) == 20


def test_vacuum_beside_a_writer_and_killed_at_random_instants(tmp_path: Path) -> None:
    """A writer commits 30 batches (merging as it goes) while vacuums with no grace run
    and are SIGKILLed after a random number of passes: every committed run stays, the
    versions left are a gap-free run up to the latest, and a last vacuum leaves exactly
    the latest version and its files."""
    root = tmp_path / "store"
    Store(root)
    ctx = w.fork_context()
    go = ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    writer = ctx.Process(target=rw.save_batches, args=(str(root), list(range(30)), 25, go, send))
    writer.start()
    go.set()
    rng = random.Random(11)
    kills = 0
    while writer.is_alive() or kills == 0:
        vrecv, vsend = ctx.Pipe(duplex=False)
        vac = ctx.Process(target=rw.vacuum_forever, args=(str(root), vsend))
        vac.start()
        want = rng.randint(1, 4)
        deadline = time.monotonic() + 60
        passes = 0
        while passes < want and time.monotonic() < deadline:
            if vrecv.poll(0.05):
                status, value = vrecv.recv()
                assert status == "pass", value
                passes = value
        os.kill(vac.pid, signal.SIGKILL)  # mid-pass or between passes: either must be safe
        vac.join(10)
        kills += 1
        versions = _versions(root)  # none yet, or a gap-free run up to the latest
        assert not versions or versions == list(range(versions[0], versions[-1] + 1))
    [answer] = w.gather([recv], [writer], timeout=300)
    assert answer == [[rw.run_id(b, i) for i in range(25)] for b in range(30)]
    assert kills >= 1
    store = Store(root)
    assert len(store.results.query("sweep")) == 30 * 25
    store.results.vacuum("sweep", grace=0)
    [latest] = _versions(root)
    assert {p.name for p in (_table(root) / "data").iterdir()} == _named(root, latest)
    assert len(Store(root).results.query("sweep")) == 30 * 25


def test_cleanup_vacuums_every_results_table_with_its_grace_and_dry_run(tmp_path: Path) -> None:
    """``efsray cleanup`` vacuums each results table with its own grace: within the grace a
    reader's pinned old version stays readable; past it, a dry run reports exactly what the
    real run then removes (each file once), and a reader of the latest version querying
    in another process all along never fails."""
    root = tmp_path / "store"
    store = Store(root)
    for b in range(24):
        store.results.save_batch("sweep", rw.batch_runs(b, 20))
    store.results.save_batch("other", rw.batch_runs(99, 5))
    before = _versions(root)
    stray = _table(root) / "data" / "never-committed.parquet"
    stray.write_bytes(b"a killed writer's batch")  # young: the grace protects it for now
    keep = 36500  # days: only the vacuum applies (the runs' ids date from 2024)
    report = store.cleanup(days=keep, grace=3600)
    assert report.areas["results"].files == 0 and not report.errors
    assert _versions(root) == before
    assert len(Store(root).results.query("sweep", version=2)) == 40  # a pinned reader's

    ctx = w.fork_context()
    recv, send = ctx.Pipe(duplex=False)
    reader = ctx.Process(target=rw.query_forever, args=(str(root), send))
    reader.start()
    try:
        assert recv.poll(60) and recv.recv() == ("pass", 1)  # reading before the cleanup
        later = time.time() + 7200  # the grace has passed for every superseded version
        dry = store.cleanup(days=keep, grace=3600, now=later, dry_run=True)
        assert _versions(root) == before  # a dry run changes nothing
        assert dry.areas["results"].files > 24 and dry.areas["results"].bytes > 0
        done = store.cleanup(days=keep, grace=3600, now=later)
        assert done.areas["results"] == dry.areas["results"] and not done.errors
        passes = 0
        while passes < 3:  # the reader goes on after the cleanup
            assert recv.poll(60)
            status, value = recv.recv()
            assert status == "pass", value
            passes += 1
    finally:
        os.kill(reader.pid, signal.SIGKILL)
        reader.join(10)
    assert _versions(root) == [before[-1]]
    data = {p.name for p in (_table(root) / "data").iterdir()}
    assert data == _named(root, before[-1])  # the stray too: older than the grace by then
    fresh = Store(root).results
    assert len(fresh.query("sweep")) == 24 * 20 and len(fresh.query("other")) == 5
    assert fresh.load(rw.run_id(5, 7), strategy="sweep").info.metrics["batch"] == 5
