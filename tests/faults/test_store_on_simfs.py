"""Market data on the simulated EFS under faults: random EIO under EFS latency, a failing
background fsync, a hung mount, a killed server.

The store's behaviour on simfs without faults (many writer processes, SIGKILLed writers, a
concurrent reader included) is the conformance suite's (tests/conformance/test_simfs.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from efsray.deadline import ChildError, run_in_child
from efsray.errors import DeadlineExceeded
from efsray.simfs import SimFSProcess
from efsray.store import Store
from tests.store._bars import batch


def test_appends_under_efs_latency_with_random_faults_lose_nothing(simfs_factory) -> None:
    """EFS General Purpose latency and a 5 % chance of EIO on any write-path operation:
    every append either commits completely or raises an efsray error, and every append that
    returned is readable afterwards."""
    from efsray.errors import EfsrayError

    fs = simfs_factory(profile="efs-gp", seed=7)
    root = fs.path / "store"
    store = Store(root)
    fs.control.inject(
        "EIO",
        ops="create,write,flush,fsync,rename,link,unlink,open,read",
        probability=0.05,
        times=None,
    )
    acknowledged, failed = set(), 0
    for i in range(20):
        try:
            store.market.append("SPY", "1m", batch(i, 20))
            acknowledged.add(i)
        except EfsrayError:
            failed += 1
    fs.control.clear_faults()
    assert fs.control.counters().faults_total > 0
    stored = Store(root).market.read("SPY", "1m").column("volume").to_numpy()
    assert acknowledged <= set(stored.astype(int).tolist())
    assert failed + len(acknowledged) == 20


def test_a_segment_whose_background_fsync_fails_is_never_committed(
    simfs: SimFSProcess,
) -> None:
    """Segment files are synced in the background while the manifest is written; an EIO from
    that fsync must fail the append before the manifest is linked, not be lost in a thread."""
    from efsray.errors import StorageError

    simfs.control.reset()
    store = Store(simfs.path / "store", auto_compact=False)
    store.market.append("SPY", "1m", batch(0, 30))
    simfs.control.inject("EIO", ops="fsync", path="*/segments/seg-*", times=1)
    with pytest.raises(StorageError, match="seg-"):
        store.market.append("SPY", "1m", batch(1, 30))
    simfs.control.clear_faults()
    assert simfs.control.counters().faults_total == 1
    assert store.market.info("SPY", "1m").version == 1
    assert Store(simfs.path / "store").market.read("SPY", "1m").num_rows == 30
    store.market.append("SPY", "1m", batch(1, 30))  # the next attempt commits
    assert store.market.info("SPY", "1m").version == 2


def tail_bars(root: str) -> int:  # runs in a deadline child
    return Store(root).market.tail("SPY", "1m", 10).num_rows


def test_a_store_call_on_a_hung_mount_times_out(simfs: SimFSProcess) -> None:
    root = simfs.path / "store"
    Store(root).market.append("SPY", "1m", batch(0, 50))
    assert run_in_child("tests.faults.test_store_on_simfs:tail_bars", {"root": str(root)},
                        timeout=60) == 10  # fmt: skip
    simfs.control.hang()
    try:
        with pytest.raises(DeadlineExceeded):
            run_in_child(
                "tests.faults.test_store_on_simfs:tail_bars", {"root": str(root)}, timeout=10.0
            )  # long enough for a fresh Python to import the store on a loaded machine
        assert simfs.control.wait_hung(1, timeout=10) >= 1
    finally:
        simfs.control.release()
    assert run_in_child("tests.faults.test_store_on_simfs:tail_bars", {"root": str(root)},
                        timeout=60) == 10  # fmt: skip


def test_a_killed_server_gives_a_storage_error_not_a_hang(simfs_factory) -> None:
    fs = simfs_factory()
    root = fs.path / "store"
    Store(root).market.append("SPY", "1m", batch(0, 50))
    fs.kill()  # the server is gone: every request fails with ENOTCONN at once
    with pytest.raises(ChildError) as info:
        run_in_child("tests.faults.test_store_on_simfs:tail_bars", {"root": str(root)},
                     timeout=30)  # fmt: skip
    assert info.value.errno == 107 or "Transport endpoint" in str(info.value)
    assert Path(fs.backing / "store").is_dir()
