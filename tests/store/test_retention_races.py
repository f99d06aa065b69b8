"""Retention cannot destroy committed data silently (issue 17.5).

A cleanup with no grace period (``efsray cleanup --grace 0 --force``) racing writers can
remove a writer's new files before its commit: the commit must then fail cleanly (the writer
looks for its files before it links its version) and, when the removal lands after that
last look, the version naming a missing file must read as a CorruptionError that says what
to do, never a raw FileNotFoundError and never wrong data. Without ``--force`` the CLI
refuses a grace period below the safe minimum.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from efsray.errors import CorruptionError, EfsrayError, InvalidDataError
from efsray.store import Store
from efsray.store.checkpoints import MIN_GRACE_S, require_safe_grace
from tests.store import _race_workers as rw
from tests.store._bars import batch
from tests.store._procs import context, join_or_kill

RACE_S = 8.0


def _race(root: Path, what: str) -> tuple[dict[str, list], tuple[int, int, list[str]]]:
    ctx = context()
    stop = ctx.Event()
    procs, pipes = [], []
    targets = [(rw.write, (str(root), k, what, stop)) for k in range(2)]
    targets.append((rw.cleanup_loop, (str(root), stop)))
    for target, args in targets:
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=target, args=(*args, send))
        proc.start()
        procs.append(proc)
        pipes.append(recv)
    try:
        deadline = time.monotonic() + RACE_S
        while time.monotonic() < deadline and not any(p.poll() for p in pipes):
            pipes[-1].poll(0.2)  # a bounded wait: workers report only once stopped
        stop.set()
        results = []
        for recv in pipes:
            assert recv.poll(60), "a worker did not report"
            results.append(recv.recv())
    finally:
        stop.set()
        join_or_kill(procs)
    writers = {key: [x for r in results[:2] for x in r[key]] for key in ("ok", "clean", "raw")}
    return writers, results[2]


def _check_race(writers: dict[str, list], runs: int, raw: list[str]) -> None:
    """No raw exception anywhere; the race ran; every failed write one the race may cause:
    the last look before the commit found a file gone, or a write into a directory the
    cleanup had just removed (ENOENT); each an EfsrayError."""
    assert raw == [], raw[0]
    assert writers["raw"] == [], writers["raw"][0]
    attempts = len(writers["ok"]) + len(writers["clean"])
    assert runs >= 2 and writers["ok"] and attempts > 10, (runs, attempts)
    messages = writers["clean"]
    for message in messages:
        assert "grace" in message or "missing" in message or "ENOENT" in message, message
    print(f"{len(messages)} clean failures", *{m.split(":")[0] for m in messages})


def test_market_appends_racing_cleanup_with_no_grace_fail_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store(root).market.append("SPY", "1m", rw.bars(9, 0))
    writers, (runs, _, raw) = _race(root, "market")
    _check_race(writers, runs, raw)
    store = Store(root)
    for read in (
        lambda: store.market.read("SPY", "1m"),
        lambda: store.market.tail("SPY", "1m", 50),
        lambda: store.market.compact("SPY", "1m"),
    ):
        try:
            table = read()
        except CorruptionError as exc:  # the latest names a file the cleanup removed
            assert "missing" in str(exc) and "backup" in str(exc), exc
            continue
        if isinstance(table, pa.Table):  # never wrong data: every row of a committed append
            ts = table.column("timestamp").cast(pa.int64()).to_numpy()
            assert np.all(np.diff(ts) > 0)
            values = table.column("close").to_numpy().astype(np.int64)
            ids, counts = np.unique(values, return_counts=True)
            assert np.all(counts <= rw.ROWS) and len(ids) >= 1


def test_checkpoint_saves_racing_prune_with_no_grace_fail_cleanly(tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store(root).checkpoints.save(rw.MODEL, rw.payload(9, 0), {"writer": 9, "n": 0})
    writers, (runs, _, raw) = _race(root, "checkpoint")
    _check_race(writers, runs, raw)
    store = Store(root)
    try:
        data, info = store.checkpoints.load_bytes(rw.MODEL)
    except CorruptionError as exc:
        assert "missing" in str(exc) and "older version" in str(exc), exc
    else:
        assert data == rw.payload(info.metadata["writer"], info.metadata["n"])


def test_a_latest_version_naming_a_missing_segment_is_corruption_with_a_fix(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    store.market.append("SPY", "1m", batch(0, 100))
    (seg,) = (store.layout.series_dir("SPY", "1m") / "segments").glob("seg-*")
    seg.unlink()
    fresh = Store(tmp_path / "store")
    for call in (
        lambda: fresh.market.read("SPY", "1m"),
        lambda: fresh.market.tail("SPY", "1m", 10),
        lambda: fresh.market.append("SPY", "1m", batch(0, 10)),  # merges into the lost segment
    ):
        with pytest.raises(CorruptionError, match=f"{seg.name}, which is missing.*backup"):
            call()
    assert fresh.market.info("SPY", "1m").rows == 100  # the manifest itself is intact


def test_a_latest_checkpoint_naming_a_missing_file_is_corruption_with_a_fix(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "store")
    info = store.checkpoints.save("m", b"weights")
    Path(info.path).unlink()
    with pytest.raises(CorruptionError, match=r"missing.*older version"):
        store.checkpoints.load_bytes("m")
    with pytest.raises(EfsrayError, match="no longer complete"):
        store.checkpoints.load_bytes("m", 1)


def test_a_grace_below_the_minimum_needs_force() -> None:
    with pytest.raises(InvalidDataError, match="--force"):
        require_safe_grace(0, force=False)
    require_safe_grace(0, force=True)
    require_safe_grace(0, force=False, dry_run=True)  # removes nothing
    require_safe_grace(MIN_GRACE_S, force=False)
