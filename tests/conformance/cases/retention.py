"""Retention (``Store.cleanup``) through the public API: what it removes, what it never
removes, dry runs, argument validation, and cleanup under live readers and writers."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from efsray.errors import InvalidDataError, VersionNotFoundError
from efsray.store import RetentionPolicy
from tests.conformance.site import Site, case
from tests.store import _ckpt_workers as w

DAY = 86400.0
GRACE = 3.0


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


@case("retention")
def old_market_versions_go_but_never_the_latest(site: Site) -> None:
    store = site.store(auto_compact=False)
    for i in range(6):
        store.market.append("SPY", "1m", _bars(i * 5))
    store.market.write("QQQ", "1m", _bars(0))
    before = store.market.read("SPY", "1m")
    report = store.cleanup(days=7, now=time.time() + 30 * DAY)
    fresh = site.store()  # a fresh reader: no cached manifests
    assert fresh.market.read("SPY", "1m").equals(before)
    assert [v.version for v in fresh.market.history("SPY", "1m")] == [6]
    with pytest.raises(VersionNotFoundError):
        fresh.market.read("SPY", "1m", version=5)
    assert [v.version for v in fresh.market.history("QQQ", "1m")] == [1]  # the only version
    assert report.areas["market_data"].files == 5  # 5 manifests; every segment is still used
    assert fresh.market.info("SPY", "1m").segments == 6


@case("retention")
def segments_go_only_when_no_kept_version_uses_them(site: Site) -> None:
    store = site.store(auto_compact=False)
    for i in range(3):
        store.market.append("SPY", "1m", _bars(i * 5))
    store.market.write("SPY", "1m", _bars(100))  # replaces every segment
    # Recent: the grace period protects everything.
    assert store.cleanup(days=0).areas["market_data"].files == 0
    assert len(site.store().market.history("SPY", "1m")) == 4
    report = store.cleanup(days=0, now=time.time() + 2 * 3600)
    assert report.areas["market_data"].files == 3 + 3  # 3 manifests, 3 unused segments
    fresh = site.store()
    assert fresh.market.read("SPY", "1m").num_rows == 5
    assert fresh.market.info("SPY", "1m").segments == 1


@case("retention")
def versions_newer_than_the_cutoff_stay(site: Site) -> None:
    store = site.store(auto_compact=False)
    for i in range(4):
        store.market.append("SPY", "1m", _bars(i * 5))
    report = store.cleanup(days=7, now=time.time() + 3 * DAY)
    assert report.files == 0
    assert len(site.store().market.history("SPY", "1m")) == 4


@case("retention")
def results_keep_the_newest_run_per_strategy(site: Site) -> None:
    store = site.store()
    ids = [store.results.save("s1", metrics={"x": i}).run_id for i in range(3)]
    keep = store.results.save("s2", metrics={"x": 9}).run_id
    store.cleanup(days=7, now=time.time() + 8 * DAY)
    frame = site.store().results.query()
    assert sorted(frame["run_id"]) == sorted([max(ids), keep])  # ids order runs (to the ms)


@case("retention")
def dry_run_changes_nothing(site: Site) -> None:
    store = site.store(auto_compact=False)
    for i in range(4):
        store.market.append("SPY", "1m", _bars(i * 5))
        store.checkpoints.save("m", bytes(100))
        store.results.save("s", metrics={"i": i})
    store.checkpoints.set_retention("m", RetentionPolicy(keep_last=1))
    before = _snapshot(site.root)
    later = time.time() + 30 * DAY
    report = store.cleanup(days=1, dry_run=True, now=later)
    assert report.dry_run and report.files > 0
    assert _snapshot(site.root) == before
    real = store.cleanup(days=1, now=later)
    assert real.areas["checkpoints"].files == 3 * 2  # 3 manifests and their data files
    assert {a: (r.files, r.bytes) for a, r in real.areas.items()} == {
        a: (r.files, r.bytes) for a, r in report.areas.items()
    }
    fresh = site.store()
    assert [i.version for i in fresh.checkpoints.list("m")] == [4]
    assert fresh.market.read("SPY", "1m").num_rows == 20


@case("retention")
def argument_validation(site: Site) -> None:
    store = site.store()
    with pytest.raises(InvalidDataError):
        store.cleanup(days=-1)
    with pytest.raises(InvalidDataError):
        store.cleanup(days=1, grace=-5)


@case("retention", needs=("processes", "heavy"))
def cleanup_under_live_readers_and_writers_loses_nothing_protected(site: Site) -> None:
    """Writers commit market data and checkpoints, readers resolve the latest version and
    then read exactly that version (no retry), and cleanup runs in a loop with a short grace
    period, removing superseded versions as fast as the rules allow. A reader that finishes
    within the grace period must never miss a file; the aliased and kept checkpoints must
    survive. (With the grace rule disabled, readers fail within a second.)"""
    root = site.root
    store = site.store()
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
        # Run until cleanup has removed plenty while everyone works, or until the deadline
        # (a cleanup pass through FUSE on a loaded machine takes seconds); whether it
        # removed enough is asserted below, and a silent cleanup fails its report there.
        removed = runs = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (removed < 200 or runs < 5):
            if not pipes["cleanup"].poll(max(0.0, deadline - time.monotonic())):
                break
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
        for p in procs:
            p.join(30)
            if p.exitcode is None:
                p.kill()
                p.join(5)
    for reader in ("reader0", "reader1"):
        reads, problems = results[reader]
        assert problems == [], problems[:3]
        assert reads > 10
    for writer in ("writer0", "writer1"):
        assert results[writer][0] == "ok", results[writer]
    assert results["cleanup"][0] == "ok", results["cleanup"]
    assert results["cleanup"][1][1] >= 200, "cleanup removed too little to prove anything"
    # What the rules protect is all there.
    store = site.store()
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
