"""The /proc/self/mountstats parser, on real captures (tests/data/mountstats) and on garbage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.monitor.mountstats import (
    BYTE_COUNTER_NAMES,
    EVENT_NAMES,
    MountStats,
    OpStats,
    mount_for_path,
    op_intervals,
    parse_mountstats,
    read_mountstats,
)

DATA = Path(__file__).parent / "data" / "mountstats"
V11 = DATA / "pcp-rhel8-kernel-4.18.0-105-rpc1.1.txt"
V10 = DATA / "pcp-rhel8-kernel-4.18.0-80-rpc1.0.txt"


def by_mount(path: Path) -> dict[str, MountStats]:
    return {m.mount_point: m for m in read_mountstats(path)}


def test_rhel8_rpc11_capture_parses_every_field() -> None:
    mounts = by_mount(V11)
    assert sum(m.is_nfs for m in mounts.values()) == 4
    assert not mounts["/sys"].is_nfs and mounts["/sys"].operations == {}
    v42 = mounts["/mnt/nfsv4.2"]
    assert v42.device == "rhel8u0-node2-beta:/exports"
    assert v42.fstype == "nfs4" and v42.statvers == "1.1" and v42.rpc_version == "1.1"
    assert v42.options["vers"] == "4.2" and v42.options["rsize"] == "524288"
    assert "hard" in v42.options and v42.options["timeo"] == "600"
    assert v42.age_seconds == 92
    assert len(v42.events) == len(EVENT_NAMES) and v42.events["vfsupdatepage"] == 256
    assert v42.bytes is not None and v42.bytes.server_write == 1048576
    assert v42.bytes.write_pages == 256
    (xprt,) = v42.transports
    assert xprt.protocol == "tcp" and xprt.sends == 29 and xprt.receives == 29
    assert v42.operations["WRITE"] == OpStats(4, 4, 0, 2098144, 704, 9, 12, 22, errors=3)
    assert v42.operations["EXCHANGE_ID"].execute_ms == 2589
    assert len(v42.operations) == 61  # every NFSv4.2 operation this kernel lists
    v3 = mounts["/mnt/nfsv3"]
    assert v3.fstype == "nfs" and v3.options["vers"] == "3"
    assert v3.operations["COMMIT"].errors == 50
    assert v3.operations["WRITE"].rtt_ms == 81


def test_rpc10_capture_has_eight_columns_and_no_error_count() -> None:
    v41 = by_mount(V10)["/mnt/nfsv4.1"]
    assert v41.rpc_version == "1.0"
    assert v41.operations["WRITE"] == OpStats(2, 2, 0, 1049072, 352, 3, 4, 7, errors=None)


def test_long_running_client_with_commented_age_line() -> None:
    mounts = by_mount(DATA / "pcp-isilon-nfs3-nfs4-rpc1.0.txt")
    assert mounts["/mnt/nfsv4"].age_seconds == 19  # "19  (time, in seconds, since ...)"
    ifs = mounts["/ifs"]
    assert ifs.age_seconds == 12515493
    write = ifs.operations["WRITE"]
    assert (write.operations, write.queue_ms, write.execute_ms) == (9523, 3423263, 3480542)
    assert ifs.transports[0].values[-1] == 108644
    assert mounts["/mnt/nfs41"].options["vers"] == "4.1"


def test_rdma_nconnect_mounts_have_one_transport_per_connection() -> None:
    mounts = by_mount(DATA / "pcp-el8.7-rdma-nconnect8-excerpt.txt")
    group = mounts["/storage/group"]
    assert len(group.transports) == 8
    assert {t.protocol for t in group.transports} == {"rdma"}
    assert sum(t.sends or 0 for t in group.transports) > 40_000_000
    assert group.bytes is not None and group.bytes.normal_read == 5990252963873
    assert group.operations["READ"].bytes_received == 1735446589952
    assert group.options["nconnect"] == "8" and group.options["proto"] == "rdma"
    assert mounts["/scratch"].fstype == "gpfs" and not mounts["/scratch"].is_nfs


def test_hand_edited_capture_keeps_what_it_can_read() -> None:
    mounts = by_mount(DATA / "telegraf-edited-garbled.txt")
    nfs4 = mounts["/mnt"]
    # the options wrapped over three lines are joined
    assert nfs4.options["acdirmin"] == "30" and nfs4.options["clientaddr"] == "3.3.3.3"
    # out-of-range counters: that line is dropped, its neighbours are kept
    assert "LAYOUTCOMMIT" not in nfs4.operations and "LAYOUTRETURN" not in nfs4.operations
    assert nfs4.operations["GETDEVICEINFO"].operations == 0
    assert nfs4.operations["READ"].rtt_ms == 7953
    nfs3 = mounts["/NFS"]
    assert nfs3.operations["COMMIT"] == OpStats(2100, 2101, 2102, 2103, 2104, 2105, 2106, 2107)
    assert nfs3.bytes is not None and nfs3.bytes.server_read == 1134399088816


def test_interval_between_two_readings_of_a_real_mount() -> None:
    text = V11.read_text()
    # a later reading: 8 more WRITEs that took 40 ms on the wire and 64 ms in all
    old = "\t       WRITE: 16 16 0 2099456 2176 101 81 183 8"
    assert old in text
    later = text.replace(old, "\t       WRITE: 24 24 0 3148032 3264 101 121 247 8")
    later = later.replace("\tage:\t88\n\tcaps:\tcaps=0x3fcf", "\tage:\t148\n\tcaps:\tcaps=0x3fcf")
    before = by_mount(V11)["/mnt/nfsv3"]
    after = {m.mount_point: m for m in parse_mountstats(later)}["/mnt/nfsv3"]
    intervals, since_mount = op_intervals(before, after)
    assert not since_mount
    write = intervals["WRITE"]
    assert write.operations == 8 and write.retransmissions == 0
    assert write.mean_rtt_seconds == pytest.approx(40 / 8 / 1000)
    assert write.mean_execute_seconds == pytest.approx(64 / 8 / 1000)
    assert intervals["READ"].mean_rtt_seconds is None  # no READ in the interval


def test_a_reboot_is_detected_even_when_the_age_grew() -> None:
    # The two RHEL 8 captures are the same mounts on two boots (kernel -80, then -105):
    # ages grew (53 -> 88 s) but ACCESS's summed RTT went down (6 -> 3 ms).
    before, after = by_mount(V10)["/mnt/nfsv3"], by_mount(V11)["/mnt/nfsv3"]
    intervals, since_mount = op_intervals(before, after)
    assert since_mount
    assert intervals["WRITE"].operations == 16  # everything since the new mount
    assert intervals["WRITE"].mean_rtt_seconds == pytest.approx(81 / 16 / 1000)


def test_retransmissions_and_timeouts_in_an_interval() -> None:
    base = OpStats(100, 100, 0, 0, 0, 0, 1000, 1200)
    later = OpStats(200, 230, 2, 0, 0, 0, 3000, 3500)
    a = MountStats("srv:/", "/mnt/efs", "nfs4", "1.1", age_seconds=10, operations={"READ": base})
    b = MountStats("srv:/", "/mnt/efs", "nfs4", "1.1", age_seconds=70, operations={"READ": later})
    intervals, _ = op_intervals(a, b)
    assert intervals["READ"].retransmissions == 30
    assert intervals["READ"].major_timeouts == 2
    assert intervals["READ"].mean_rtt_seconds == pytest.approx(0.02)


def test_mount_for_path_is_lexical_longest_prefix_and_later_wins() -> None:
    text = (
        "device srv:/a mounted on /mnt/efs with fstype nfs4 statvers=1.1\n"
        "device srv:/b mounted on /mnt/efs/data with fstype nfs4 statvers=1.1\n"
        "device srv:/c mounted on /mnt/efs with fstype nfs4 statvers=1.1\n"
        "device rootfs mounted on / with fstype ext4\n"
    )
    mounts = parse_mountstats(text)
    assert mount_for_path(mounts, "/mnt/efs/data/x/y").device == "srv:/b"
    assert mount_for_path(mounts, "/mnt/efs/other").device == "srv:/c"  # on top of srv:/a
    assert mount_for_path(mounts, "/mnt/efs").device == "srv:/c"
    assert mount_for_path(mounts, "/mnt/efsx").device == "rootfs"  # not a path prefix
    assert mount_for_path(mounts[:2], "/opt") is None


def test_escaped_mount_points_are_decoded() -> None:
    text = (
        "device srv:/my\\040share mounted on /mnt/my\\040efs\\011x with fstype nfs statvers=1.1\n"
    )
    (mount,) = parse_mountstats(text)
    assert mount.device == "srv:/my share"
    assert mount.mount_point == "/mnt/my efs\tx"


# --- properties -------------------------------------------------------------------------

_counter = st.integers(min_value=0, max_value=2**64 - 1)
_op = st.builds(
    OpStats,
    _counter,
    _counter,
    _counter,
    _counter,
    _counter,
    _counter,
    _counter,
    _counter,
    errors=st.one_of(st.none(), _counter),
)
_name = st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True)
_path = st.from_regex(r"/[a-z0-9 ._-]{0,20}(/[a-z0-9 ._-]{1,12}){0,3}", fullmatch=True)


def _escape(text: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in text)


def render(mounts: list[MountStats]) -> str:
    """Write mounts the way the kernel does (fs/nfs/super.c, net/sunrpc/stats.c)."""
    out = []
    for m in mounts:
        head = f"device {_escape(m.device)} mounted on {_escape(m.mount_point)} with fstype "
        out.append(head + m.fstype + (f" statvers={m.statvers}" if m.statvers else ""))
        if m.statvers is None:
            continue
        opts = ",".join(f"{k}={v}" if v else k for k, v in m.options.items())
        out.append(f"\topts:\t{opts}")
        out.append(f"\tage:\t{m.age_seconds}")
        out.append("\tevents:\t" + " ".join(str(m.events[n]) for n in EVENT_NAMES) + " ")
        assert m.bytes is not None
        out.append("\tbytes:\t" + " ".join(str(getattr(m.bytes, n)) for n in BYTE_COUNTER_NAMES))
        out.append(f"\tRPC iostats version: {m.rpc_version}  p/v: 100003/4 (nfs)")
        for t in m.transports:
            out.append(f"\txprt:\t{t.protocol} " + " ".join(map(str, t.values)))
        out.append("\tper-op statistics")
        for name, s in m.operations.items():
            cols = [s.operations, s.transmissions, s.major_timeouts, s.bytes_sent]
            cols += [s.bytes_received, s.queue_ms, s.rtt_ms, s.execute_ms]
            cols += [] if s.errors is None else [s.errors]
            out.append(f"\t{name:>12}: " + " ".join(map(str, cols)))
        out.append("")
    return "\n".join(out) + "\n"


@st.composite
def nfs_mounts(draw: st.DrawFn) -> MountStats:
    from efsray.monitor.mountstats import ByteCounters, Transport

    ops = draw(st.dictionaries(_name, _op, max_size=6))
    nine = draw(st.booleans())  # a kernel prints 8 or 9 columns for all operations alike
    ops = {
        k: dataclasses.replace(v, errors=(v.errors or 0) if nine else None) for k, v in ops.items()
    }
    return MountStats(
        device=draw(st.from_regex(r"[a-z0-9.-]{1,20}:/[a-z0-9 /]{0,10}", fullmatch=True)),
        mount_point=draw(_path),
        fstype=draw(st.sampled_from(["nfs", "nfs4"])),
        statvers="1.1",
        options=draw(
            st.dictionaries(
                st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                st.from_regex(r"[a-z0-9.]{0,6}", fullmatch=True),
                max_size=5,
            )
        ),
        age_seconds=draw(_counter),
        events={n: draw(_counter) for n in EVENT_NAMES},
        bytes=ByteCounters(*(draw(_counter) for _ in BYTE_COUNTER_NAMES)),
        rpc_version="1.1",
        transports=tuple(
            Transport(
                draw(st.sampled_from(["tcp", "udp", "rdma"])),
                tuple(draw(st.lists(_counter, min_size=1, max_size=14))),
            )
            for _ in range(draw(st.integers(0, 3)))
        ),
        operations=ops,
    )


@given(st.lists(nfs_mounts(), max_size=3))
@settings(max_examples=60, deadline=None)
def test_render_then_parse_round_trips(mounts: list[MountStats]) -> None:
    assert parse_mountstats(render(mounts)) == mounts


@given(st.text(max_size=2000))
@settings(max_examples=300, deadline=None)
def test_arbitrary_text_never_raises(text: str) -> None:
    for mount in parse_mountstats(text):
        assert all(v.operations >= 0 for v in mount.operations.values())


@given(st.data())
@settings(max_examples=80, deadline=None)
def test_corrupted_real_capture_never_raises_and_keeps_intact_mounts(data: st.DataObject) -> None:
    lines = V11.read_text().splitlines()
    i = data.draw(st.integers(0, len(lines) - 1))
    junk = data.draw(st.text(max_size=60))
    lines[i] = junk
    mounts = parse_mountstats("\n".join(lines))
    # every device header that survived is still found, with its operations
    assert len(mounts) >= sum(1 for line in lines if line.startswith("device ")) - 1
    v3 = {m.mount_point: m for m in mounts}.get("/mnt/nfsv3")
    if v3 is not None and i < lines.index(next(x for x in lines if "/mnt/nfsv3" in x)):
        assert v3.operations["WRITE"].operations == 16
