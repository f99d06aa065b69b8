"""Retention: what cleanup removes, what it never removes, and cleanup under live traffic."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from efsray.errors import InvalidDataError, VersionNotFoundError
from efsray.store import EFSDataManager, RetentionPolicy, Store
from efsray.store.nfs import TEMP_PREFIX, VersionLog
from tests.store import _ckpt_workers as w
from tests.store._procs import join_or_kill

DAY = 86400.0


def _bars(start: int, n: int = 5) -> pd.DataFrame:
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(range(start, start + n), unit="min")
    x = [float(i) for i in range(start, start + n)]
    return pd.DataFrame({"timestamp": ts, "open": x, "high": x, "low": x, "close": x, "volume": x})


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", auto_compact=False)


def test_old_market_versions_go_but_never_the_latest(store: Store) -> None:
    for i in range(6):
        store.market.append("SPY", "1m", _bars(i * 5))
    store.market.write("QQQ", "1m", _bars(0))
    before = store.market.read("SPY", "1m")
    seg_dir = store.layout.series_dir("SPY", "1m") / "segments"
    assert len(list(seg_dir.iterdir())) == 6
    report = store.cleanup(days=7, now=time.time() + 30 * DAY)
    store = Store(store.root)  # a fresh reader: no cached manifests
    assert store.market.read("SPY", "1m").equals(before)
    assert [v.version for v in store.market.history("SPY", "1m")] == [6]
    with pytest.raises(VersionNotFoundError):
        store.market.read("SPY", "1m", version=5)
    assert [v.version for v in store.market.history("QQQ", "1m")] == [1]  # the only version
    assert report.areas["market_data"].files == 5  # 5 manifests; every segment is still used
    assert len(list(seg_dir.iterdir())) == 6


def test_segments_go_only_when_no_kept_version_uses_them(store: Store) -> None:
    for i in range(3):
        store.market.append("SPY", "1m", _bars(i * 5))
    store.market.write("SPY", "1m", _bars(100))  # replaces every segment
    seg_dir = store.layout.series_dir("SPY", "1m") / "segments"
    assert len(list(seg_dir.iterdir())) == 4
    # Recent: the grace period protects everything.
    assert store.cleanup(days=0).areas["market_data"].files == 0
    report = store.cleanup(days=0, now=time.time() + 2 * 3600)
    assert report.areas["market_data"].files == 3 + 3  # 3 manifests, 3 unused segments
    assert len(list(seg_dir.iterdir())) == 1
    assert Store(store.root).market.read("SPY", "1m").num_rows == 5


def test_versions_newer_than_the_cutoff_stay(store: Store) -> None:
    for i in range(4):
        store.market.append("SPY", "1m", _bars(i * 5))
    report = store.cleanup(days=7, now=time.time() + 3 * DAY)
    assert report.files == 0
    assert len(Store(store.root).market.history("SPY", "1m")) == 4


def test_a_series_without_head_keeps_its_history(store: Store) -> None:
    for i in range(3):
        store.market.append("SPY", "1m", _bars(i * 5))
    os.unlink(store.layout.series_dir("SPY", "1m") / "HEAD")
    store.cleanup(days=0, now=time.time() + 30 * DAY)
    assert len(Store(store.root).market.history("SPY", "1m")) == 3
    vlog = VersionLog(store.layout.series_dir("SPY", "1m"), "x")
    assert vlog.latest() is not None and vlog.latest()[0] == 3


def test_unreferenced_segments_of_running_writers_are_safe(store: Store) -> None:
    store.market.append("SPY", "1m", _bars(0))
    seg_dir = store.layout.series_dir("SPY", "1m") / "segments"
    pending = seg_dir / "seg-00000000000000000000000000000000.parquet"
    pending.write_bytes(b"PAR1 not yet committed")
    assert store.cleanup(days=0).areas["market_data"].files == 0
    assert pending.exists()
    assert store.cleanup(days=0, now=time.time() + 7200).areas["market_data"].files == 1
    assert not pending.exists()


def test_temp_debris_and_logs(store: Store) -> None:
    debris = [
        store.root / f"{TEMP_PREFIX}marker.h.1.aaaa",
        store.layout.logs / f"{TEMP_PREFIX}app.log.h.1.bbbb",
        store.layout.checkpoints / f"{TEMP_PREFIX}x.h.2.cccc",
    ]
    for path in debris:
        path.write_bytes(b"x" * 10)
    staging = store.root / f"{TEMP_PREFIX}copy.1234"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "f").write_bytes(b"y" * 7)
    old_log = store.layout.logs / "worker-1.log"
    old_log.write_bytes(b"z" * 100)
    os.utime(old_log, (time.time() - 10 * DAY,) * 2)
    new_log = store.layout.logs / "nested" / "worker-2.log"
    new_log.parent.mkdir()
    new_log.write_bytes(b"z" * 50)

    report = store.cleanup(days=7)
    assert report.areas["logs"].files == 1 and not old_log.exists() and new_log.exists()
    assert report.areas["temp"].files == 0  # younger than the grace period: a live writer's
    report = store.cleanup(days=7, now=time.time() + 7200)
    assert report.areas["temp"] == type(report.areas["temp"])(files=4, bytes=37)
    assert not any(p.exists() for p in debris) and not staging.exists()
    assert new_log.exists()


def test_results_keep_the_newest_run_per_strategy(store: Store) -> None:
    ids = [store.results.save("s1", metrics={"x": i}).run_id for i in range(3)]
    keep = store.results.save("s2", metrics={"x": 9}).run_id
    run_dir = Path(store.results.info(ids[0]).path).parent
    orphan = run_dir / f"{ids[0][:10]}0000000000000000.trades.parquet"
    orphan.write_bytes(b"PAR1")
    report = store.cleanup(days=7, now=time.time() + 8 * DAY)
    assert report.areas["results"].files == 2 + 1
    frame = store.results.query()
    assert sorted(frame["run_id"]) == sorted([max(ids), keep])  # ids order runs (to the ms)
    assert not orphan.exists()


def test_dry_run_changes_nothing(store: Store) -> None:
    for i in range(4):
        store.market.append("SPY", "1m", _bars(i * 5))
        store.checkpoints.save("m", bytes(100))
        store.results.save("s", metrics={"i": i})
    store.checkpoints.set_retention("m", RetentionPolicy(keep_last=1))
    (store.root / f"{TEMP_PREFIX}junk.h.1.dddd").write_bytes(b"j")
    before = _snapshot(store.root)
    later = time.time() + 30 * DAY
    report = store.cleanup(days=1, dry_run=True, now=later)
    assert report.dry_run and report.files > 0
    assert _snapshot(store.root) == before
    real = store.cleanup(days=1, now=later)
    assert real.areas["checkpoints"].files == 3 * 2  # 3 manifests and their data files
    assert {a: (r.files, r.bytes) for a, r in real.areas.items()} == {
        a: (r.files, r.bytes) for a, r in report.areas.items()
    }


def test_argument_validation(store: Store) -> None:
    with pytest.raises(InvalidDataError):
        store.cleanup(days=-1)
    with pytest.raises(InvalidDataError):
        store.cleanup(days=1, grace=-5)


def test_seed_face_cleanup_old_data(tmp_path: Path) -> None:
    manager = EFSDataManager(tmp_path / "store")
    report = asyncio.run(manager.cleanup_old_data(days_to_keep=7))
    assert report.files == 0 and set(report.areas) >= {"market_data", "checkpoints", "results"}


GRACE = 3.0


def test_cleanup_under_live_readers_and_writers_loses_nothing_protected(tmp_path: Path) -> None:
    """Writers commit market data and checkpoints, readers resolve the latest version and
    then read exactly that version (no retry), and cleanup runs in a loop with a short grace
    period, removing superseded versions as fast as the rules allow. A reader that finishes
    within the grace period must never miss a file; the aliased and kept checkpoints must
    survive. (With the grace rule disabled, readers fail within a second.)"""
    root = tmp_path / "store"
    store = Store(root)
    store.market.append("SPY", "1m", _bars(0))
    store.checkpoints.save(w.MODEL, w.payload("first", 2048), {"seed": "first", "size": 2048})
    store.checkpoints.set_alias(w.MODEL, "production", 1)
    store.checkpoints.set_retention(w.MODEL, RetentionPolicy(keep_last=2))
    ctx = w.fork_context()
    stop = ctx.Event()
    procs, pipes = [], {}
    for name, target, args in (
        ("writer0", w.churn, (str(root), 0, stop)),
        ("writer1", w.churn, (str(root), 1, stop)),
        ("reader0", w.read_pinned, (str(root), stop)),
        ("reader1", w.read_pinned, (str(root), stop)),
        ("cleanup", w.cleanup_loop, (str(root), GRACE, stop)),
    ):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=target, args=(*args, send))
        p.start()
        procs.append(p)
        pipes[name] = recv
    try:
        # Run until cleanup has removed plenty while everyone works (bounded by a deadline).
        removed = runs = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (removed < 200 or runs < 5):
            assert pipes["cleanup"].poll(deadline - time.monotonic()), "cleanup went silent"
            status, value = pipes["cleanup"].recv()
            assert status == "progress", value
            runs, removed = value
            if any(pipes[r].poll() for r in ("reader0", "reader1")):
                break  # a reader gave up early: it found problems
        stop.set()
        results = {}
        for name, recv in pipes.items():
            assert recv.poll(60), f"{name} did not report"
            msg = recv.recv()
            while name == "cleanup" and msg[0] == "progress":
                assert recv.poll(60)
                msg = recv.recv()
            results[name] = msg
    finally:
        stop.set()
        join_or_kill(procs)
    for reader in ("reader0", "reader1"):
        reads, problems = results[reader]
        assert problems == [], problems[:3]
        assert reads > 10
    for writer in ("writer0", "writer1"):
        assert results[writer][0] == "ok", results[writer]
    assert results["cleanup"][0] == "ok", results["cleanup"]
    assert results["cleanup"][1][1] >= 200, "cleanup removed too little to prove anything"
    # What the rules protect is all there.
    store = Store(root)
    kept = [i.version for i in store.checkpoints.list(w.MODEL)]
    latest = store.checkpoints.latest_version(w.MODEL)
    assert latest is not None and 1 in kept and {latest - 1, latest} <= set(kept)
    for v in kept:
        data, info = store.checkpoints.load_bytes(w.MODEL, v)
        assert data == w.expected_content(info.metadata)
    history = [v.version for v in store.market.history("SPY", "1m")]
    assert history == list(range(history[0], history[-1] - 1, -1))  # contiguous, newest first
    for v in history:
        assert store.market.read("SPY", "1m", version=v).num_rows > 0
    total = sum(results[wr][1] for wr in ("writer0", "writer1"))
    assert store.market.read("SPY", "1m").num_rows == 5 + total
