"""Checkpoints on the simulated EFS: round-trip counts and injected faults (a full volume,
read errors, random EIO under EFS latency).

Checkpoints and results without faults, concurrent and SIGKILLed savers included, are the
conformance suite's (tests/conformance/test_simfs.py)."""

from __future__ import annotations

import pytest

from efsray.errors import EfsrayError, StorageError, StorageFullError
from efsray.simfs import SimFSProcess
from efsray.store import Store
from efsray.store.nfs import is_temp_name
from tests.store import _ckpt_workers as w


def test_loading_the_latest_costs_the_same_whatever_the_history(simfs: SimFSProcess) -> None:
    store = Store(simfs.path / "store")
    costs = {}
    for history in (3, 40):
        model = f"m{history}"
        for i in range(history):
            store.checkpoints.save(model, bytes([i % 256]) * 1000)
        fresh = Store(simfs.path / "store")
        simfs.control.reset()
        data, info = fresh.checkpoints.load_bytes(model)
        assert info.version == history and data == bytes([(history - 1) % 256]) * 1000
        counts = simfs.control.counters()
        costs[history] = {k: counts[k] for k in ("open", "read", "readdir")}
    assert costs[3] == costs[40], costs  # HEAD, probe, manifest, data: no listing
    assert costs[40]["readdir"] == 0
    print(f"load_bytes(latest) costs {costs[40]}")


def test_a_full_volume_fails_the_save_and_publishes_nothing(simfs: SimFSProcess) -> None:
    store = Store(simfs.path / "store")
    store.checkpoints.save("m", b"first")
    simfs.control.inject("ENOSPC", ops="write", path="*/checkpoints/*", times=None)
    with pytest.raises(StorageFullError, match="full"):
        store.checkpoints.save("m", w.payload("big", 3 << 20))
    simfs.control.clear_faults()
    assert store.checkpoints.latest_version("m") == 1
    assert store.checkpoints.load_bytes("m")[0] == b"first"
    leftovers = [p for p in (simfs.path / "store").rglob("*") if is_temp_name(p.name)]
    assert leftovers == []  # the failed save removed its temporary file itself
    assert store.checkpoints.save("m", b"second").version == 2


def test_a_read_error_is_an_error_never_wrong_bytes(simfs: SimFSProcess) -> None:
    store = Store(simfs.path / "store")
    data = w.payload("x", 2 << 20)
    info = store.checkpoints.save("m", data)
    simfs.control.inject("EIO", ops="read", path="*checkpoint.bin", times=None)
    with pytest.raises(StorageError):
        Store(simfs.path / "store").checkpoints.load_bytes("m")
    simfs.control.clear_faults()
    assert Store(simfs.path / "store").checkpoints.load_bytes("m")[0] == data
    assert info.version == 1


def test_saves_under_efs_latency_and_random_faults(simfs_factory) -> None:
    """EFS latency and a 5 % chance of EIO on any write-path operation: each save commits a
    version that loads and verifies, or raises an efsray error and commits nothing."""
    fs = simfs_factory(profile="efs-gp", seed=11)
    store = Store(fs.path / "store")
    fs.control.inject(
        "EIO", ops="create,write,flush,fsync,rename,link,open,mkdir", probability=0.05, times=None
    )
    saved: dict[int, bytes] = {}
    failed = 0
    for i in range(15):
        data = w.payload(f"f{i}", 100_000 + i)
        try:
            saved[store.checkpoints.save("m", data, {"i": i}).version] = data
        except EfsrayError:
            failed += 1
    fs.control.clear_faults()
    assert fs.control.counters().faults_total > 0
    fresh = Store(fs.path / "store")
    versions = [i.version for i in fresh.checkpoints.list("m")]
    assert versions == list(range(1, len(versions) + 1))
    assert set(saved) <= set(versions)
    for v in versions:
        data, _ = fresh.checkpoints.load_bytes("m", v)
        if v in saved:
            assert data == saved[v]
    assert failed + len(saved) == 15
