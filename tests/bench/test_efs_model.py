"""bench/_efs.py: the EFS model, counter snapshots, and the kernel NFS client seam."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench._efs import (
    EFS_CLIENT_MIB_S,
    EFS_GP_MS,
    Medium,
    MountstatsCounters,
    OpTally,
    SimfsCounters,
    Snapshot,
    kinds_cell,
    measured,
    model_table,
    modelled_seconds,
    nfs_readahead,
    round_trips,
)

MOUNTSTATS = Path(__file__).parents[1] / "data" / "mountstats"
V11 = MOUNTSTATS / "pcp-rhel8-kernel-4.18.0-105-rpc1.1.txt"


def test_model_charges_each_kind_its_published_latency_plus_bytes() -> None:
    ops = {"read": 10, "write": 2, "getattr": 3, "release": 5}
    expected = (10 * 0.6 + 2 * 2.7 + 3 * 1.0) / 1e3 + 2**20 / (EFS_CLIENT_MIB_S * 2**20)
    assert modelled_seconds(ops, 2**20) == pytest.approx(expected)
    # the simulator's asynchronous releases are neither round trips nor time
    assert round_trips(ops) == 15
    assert EFS_GP_MS["release"] == 0.0
    # an unknown kind is charged as a metadata call, not dropped
    assert modelled_seconds({"secinfo_no_name": 1}) == pytest.approx(1.0e-3)


def test_model_table_lists_every_kind_once() -> None:
    table = model_table()
    for kind in EFS_GP_MS:
        assert table.count(f" {kind},") + table.count(f" {kind} |") == 1, kind


def test_snapshot_difference_drops_kinds_that_did_not_move() -> None:
    before = Snapshot({"read": 4, "write": 1}, bytes_read=100, bytes_written=5)
    after = Snapshot({"read": 6, "write": 1, "open": 2}, bytes_read=300, bytes_written=5)
    assert after - before == Snapshot({"open": 2, "read": 2}, 200, 0)


def test_tally_means_amortize_rare_expensive_calls() -> None:
    tally = OpTally()
    tally.add(0.1, Snapshot({"write": 1}), 5)
    tally.add(0.3, Snapshot({"write": 1, "rename": 2}), 5)  # a merge
    s = tally.summary()
    assert s["calls"] == 2 and s["units"] == 10
    assert s["ops"] == {"rename": 1.0, "write": 1.0}
    assert (s["round_trips"], s["round_trips_min"], s["round_trips_max"]) == (2.0, 1, 3)
    assert s["modelled_s"] == pytest.approx((2.7 + 2.7) / 1e3)
    assert kinds_cell(s["ops"]) in ("rename 1, write 1", "write 1, rename 1")


def _edit_write_count(text: str, mount: str, ops: int) -> str:
    """The same capture with the WRITE count of ``mount``'s block set to ``ops``."""
    out, inside = [], False
    for line in text.splitlines():
        if line.startswith("device "):
            inside = f" mounted on {mount} " in line
        if inside and line.strip().startswith("WRITE:"):
            fields = line.split()
            fields[1] = str(ops)
            line = "\t       " + " ".join(fields)
        out.append(line)
    return "\n".join(out) + "\n"


def test_mountstats_counters_count_the_kernel_clients_rpcs(tmp_path: Path) -> None:
    stats = tmp_path / "mountstats"
    stats.write_text(V11.read_text())
    counters = MountstatsCounters(Path("/mnt/nfsv4.1/efsray-bench-x"), mountstats=stats)
    first = counters.snapshot()
    assert first.ops["write"] == 4 and first.ops["getattr"] == 2
    assert "lookup" not in first.ops  # zero counts are left out; LOOKUP is its own kind
    assert first.bytes_written == 1048576
    stats.write_text(_edit_write_count(V11.read_text(), "/mnt/nfsv4.1", 10))
    assert (counters.snapshot() - first).ops == {"write": 6}


def test_mountstats_counters_refuse_a_path_not_on_nfs(tmp_path: Path) -> None:
    stats = tmp_path / "mountstats"
    stats.write_text(V11.read_text())
    with pytest.raises(SystemExit, match="not on an NFS mount"):
        MountstatsCounters(Path("/sys/kernel/x"), mountstats=stats).snapshot()


def test_measured_counts_what_one_call_sent_to_the_simulator(simfs_factory) -> None:
    fs = simfs_factory(attr_timeout=3.0)
    if os.geteuid() == 0:
        assert nfs_readahead(fs.path) == "1024 KiB"
    medium = Medium("efs-like", fs.path, "test", SimfsCounters(fs.control))
    data = os.urandom(3 << 20)

    def write() -> None:
        with open(fs.path / "f", "wb") as f:
            f.write(data)
            os.fsync(f.fileno())

    _, _, delta = measured(medium, write)
    assert delta is not None
    assert delta.ops["create"] == 1 and delta.ops["fsync"] == 1
    assert delta.ops["write"] == 3  # one WRITE per 1 MiB (wsize)
    assert delta.bytes_written == 3 << 20
    assert delta.files_written == 1  # from the simulator's trace

    def small_writes() -> None:
        with open(fs.path / "g", "wb", buffering=0) as f:
            for _ in range(10):
                f.write(b"x" * 1000)

    _, _, delta = measured(medium, small_writes)
    assert delta is not None
    # (FUSE may split a write() that crosses a page boundary: at least 10 requests)
    assert delta.ops["write"] >= 10 and delta.nfs_ops()["write"] == 1

    def read() -> bytes:
        with open(fs.path / "f", "rb") as f:
            return f.read()

    _, got, delta = measured(medium, read)
    assert got == data
    assert delta is not None
    if os.geteuid() == 0:  # with an NFS client's read-ahead: one READ per 1 MiB (rsize)
        assert delta.ops["read"] <= 4


def test_writes_are_counted_per_wsize_of_each_file_as_an_nfs_client_sends_them() -> None:
    # 14 write() calls into one 236 KiB segment, 1 into a manifest: two NFS WRITEs
    small = Snapshot({"write": 15, "fsync": 2}, bytes_written=236 << 10, files_written=2)
    assert small.nfs_ops() == {"write": 2, "fsync": 2}
    # one 3 MiB file written in 1 MiB calls stays 3 WRITEs
    big = Snapshot({"write": 3}, bytes_written=3 << 20, files_written=1)
    assert big.nfs_ops()["write"] == 3
    # counts from the kernel's NFS client (no trace) are already RPCs
    assert Snapshot({"write": 7}, bytes_written=10).nfs_ops() == {"write": 7}
    tally = OpTally()
    tally.add(0.1, small)
    s = tally.summary()
    assert (s["round_trips"], s["round_trips_wsize"]) == (17, 4)
    assert s["modelled_s"] == pytest.approx(4 * 2.7e-3 + (236 << 10) / (500 * 2**20))
