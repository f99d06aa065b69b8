"""/proc/self/mountinfo parsing (real lines, escapes, optional fields, garbage) and drift."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.errors import MountError
from efsray.mount import (
    EFSMountConfig,
    MountInfo,
    find_mount,
    mount_at,
    option_drift,
    parse_mountinfo,
    parse_mountinfo_line,
    read_mountinfo,
)
from efsray.mount.options import RECOMMENDED_OPTIONS

# Shapes as the kernel writes them for the kernel client, for amazon-efs-utils with TLS
# (stunnel/efs-proxy on 127.0.0.1), inside a container, and for other filesystems.
EFS_KERNEL = (
    "45 27 0:40 / /mnt/efs rw,relatime shared:26 - nfs4 "
    "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com:/ rw,vers=4.1,rsize=1048576,"
    "wsize=1048576,namlen=255,hard,noresvport,proto=tcp,timeo=600,retrans=2,sec=sys,"
    "clientaddr=172.31.10.20,local_lock=none,addr=172.31.5.6"
)
EFS_TLS = (
    "830 812 0:77 / /mnt/workspace rw,relatime - nfs4 127.0.0.1:/ rw,vers=4.1,rsize=1048576,"
    "wsize=1048576,namlen=255,hard,noresvport,proto=tcp,port=20049,timeo=600,retrans=2,"
    "sec=sys,clientaddr=127.0.0.1,local_lock=none,addr=127.0.0.1"
)
EFS_BAD = (
    "901 700 0:80 /sub\\040dir /mnt/my\\040efs rw,noatime master:3 propagate_from:2 - nfs4 "
    "10.0.1.100:/sub\\040dir rw,vers=4.0,rsize=65536,wsize=1048576,namlen=255,soft,proto=tcp,"
    "timeo=600,retrans=2,sec=sys,clientaddr=10.0.1.7,local_lock=none,addr=10.0.1.100"
)
EFS_NOAC = (
    "902 700 0:81 / /mnt/noac rw,relatime unbindable - nfs4 [fd00::5]:/ rw,vers=4.1,"
    "rsize=1048576,wsize=1048576,namlen=255,acregmin=0,acregmax=0,acdirmin=0,acdirmax=0,"
    "hard,noresvport,proto=tcp6,timeo=600,retrans=2,sec=sys,lookupcache=none,addr=fd00::5"
)
CONTAINER_NFS3 = (
    "1500 1400 0:55 / /data rw,relatime - nfs 10.0.0.5:/export rw,vers=3,rsize=1048576,"
    "wsize=1048576,namlen=255,hard,proto=tcp,timeo=600,retrans=2,sec=sys,mountaddr=10.0.0.5,"
    "mountvers=3,mountport=20048,mountproto=udp,local_lock=none,addr=10.0.0.5"
)
ROOT = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard"
FUSE = "60 27 0:50 / /tmp/a\\134b\\011c rw,nosuid,nodev,relatime - fuse.hangfs hangfs rw,user_id=0"
TMPFS_NONE = "61 27 0:51 / /run/x rw - tmpfs none rw,size=4k"
NO_SUPER = "62 27 0:52 / /weird rw - fuse "

TABLE = "\n".join([ROOT, EFS_KERNEL, EFS_TLS, EFS_BAD, EFS_NOAC, CONTAINER_NFS3, FUSE, TMPFS_NONE])


def test_kernel_efs_line() -> None:
    m = parse_mountinfo_line(EFS_KERNEL)
    assert (m.mount_id, m.parent_id, m.major, m.minor) == (45, 27, 0, 40)
    assert m.root == "/" and m.mount_point == "/mnt/efs"
    assert m.mount_options == ("rw", "relatime")
    assert m.optional_fields == ("shared:26",)
    assert m.fs_type == "nfs4" and m.is_nfs
    assert m.server == "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"
    assert m.export == "/"
    assert "vers=4.1" in m.super_options and "noresvport" in m.super_options
    assert m.options.count("rw") == 1  # merged, each name once


def test_escaped_spaces_and_several_optional_fields() -> None:
    m = parse_mountinfo_line(EFS_BAD)
    assert m.root == "/sub dir"
    assert m.mount_point == "/mnt/my efs"
    assert m.source == "10.0.1.100:/sub dir"
    assert m.export == "/sub dir"
    assert m.optional_fields == ("master:3", "propagate_from:2")


def test_backslash_tab_ipv6_none_and_missing_super_options() -> None:
    assert parse_mountinfo_line(FUSE).mount_point == "/tmp/a\\b\tc"
    assert parse_mountinfo_line(FUSE).server is None
    assert parse_mountinfo_line(EFS_NOAC).server == "fd00::5"
    assert parse_mountinfo_line(EFS_NOAC).optional_fields == ("unbindable",)
    assert parse_mountinfo_line(TMPFS_NONE).source == "none"
    weird = parse_mountinfo_line(NO_SUPER)
    assert weird.source == "" and weird.super_options == ()


@pytest.mark.parametrize(
    "line",
    [
        "",
        "garbage",
        "1 2 3:4 / /x rw shared:1 ext4 /dev/x rw",  # no separator
        "1 2 3-4 / /x rw - ext4 /dev/x rw",  # bad device
        "a 2 3:4 / /x rw - ext4 /dev/x rw",  # bad id
        "1 2 3:4 / /x rw - ext4 /dev/x rw extra",  # too many fields
        "1 2 3:4 / /x rw -",  # nothing after the separator
        "1 2 3:4 /  rw - ext4 /dev/x rw",  # empty mount point
        "1 2 3:4 / /x rw  - ext4 /dev/x rw",  # empty optional field
    ],
)
def test_malformed_lines_are_mount_errors(line: str) -> None:
    with pytest.raises(MountError, match="malformed mountinfo line"):
        parse_mountinfo_line(line)


def test_whole_table_and_lenient_parsing(caplog) -> None:
    mounts = parse_mountinfo(TABLE + "\n\n")
    assert len(mounts) == 8
    assert [m.mount_point for m in mounts if m.is_nfs] == [
        "/mnt/efs", "/mnt/workspace", "/mnt/my efs", "/mnt/noac", "/data",
    ]  # fmt: skip
    with caplog.at_level("WARNING", logger="efsray.mount"):
        assert len(parse_mountinfo(TABLE + "\nnot a mount line\n")) == 8
    assert "line 9" in caplog.text
    with pytest.raises(MountError, match="line 9"):
        parse_mountinfo(TABLE + "\nnot a mount line\n", strict=True)


def test_read_the_real_table_and_a_missing_one(tmp_path: Path) -> None:
    mounts = read_mountinfo()
    assert find_mount(mounts, "/") is not None
    with pytest.raises(MountError, match="cannot read the mount table"):
        read_mountinfo(tmp_path / "nope")


def test_find_mount_and_mount_at_are_string_matches() -> None:
    mounts = parse_mountinfo(TABLE)
    assert find_mount(mounts, "/mnt/efs/market_data/x.parquet").mount_point == "/mnt/efs"
    assert find_mount(mounts, "/mnt/efsx").mount_point == "/"
    assert find_mount(mounts, "/mnt/my efs/a").fs_type == "nfs4"
    assert mount_at(mounts, "/mnt/efs/sub") is None
    assert mount_at(mounts, "/mnt/efs/").mount_id == 45
    stacked = parse_mountinfo(TABLE + "\n99 45 0:99 / /mnt/efs rw - tmpfs tmpfs rw")
    assert mount_at(stacked, "/mnt/efs").fs_type == "tmpfs"  # the topmost wins
    assert find_mount(stacked, "/mnt/efs/x").fs_type == "tmpfs"


# --- drift -------------------------------------------------------------------------------


def test_recommended_mount_has_no_drift() -> None:
    report = option_drift(parse_mountinfo_line(EFS_KERNEL).options)
    assert report.ok and report.matches
    assert report.summary() == "options as recommended"


def test_tls_mount_matches_an_efs_helper_config() -> None:
    config = EFSMountConfig(
        "fs-0123456789abcdef0.efs.us-east-1.amazonaws.com", "/mnt/workspace",
        mount_type="efs", tls=True, access_point="fsap-0123456789abcdef0",
    )  # fmt: skip
    report = option_drift(parse_mountinfo_line(EFS_TLS).options, config.get_mount_options())
    assert report.ok, report.summary()


def test_drift_lists_each_difference() -> None:
    report = option_drift(parse_mountinfo_line(EFS_BAD).options, mount_point="/mnt/my efs")
    kinds = {(i.option, i.kind) for i in report.items}
    assert ("nfsvers", "different") in kinds
    assert ("rsize", "different") in kinds
    assert ("hard", "different") in kinds
    assert ("resvport", "missing") in kinds
    assert ("hard", "harmful") in kinds
    assert not report.matches
    rsize = next(i for i in report.items if i.option == "rsize")
    assert (rsize.expected, rsize.actual) == ("rsize=1048576", "rsize=65536")
    assert "soft" in report.summary()


def test_disabled_caches_are_harmful_in_kernel_spelling() -> None:
    report = option_drift(parse_mountinfo_line(EFS_NOAC).options)
    harmful = {i.actual for i in report.items if i.kind == "harmful"}
    assert {"acregmax=0", "lookupcache=none"} <= harmful
    assert report.matches and not report.ok


def test_explicitly_requested_options_match() -> None:
    live = parse_mountinfo_line(EFS_BAD).options
    wanted = ["nfsvers=4.0", "rsize=65536", "wsize=1048576", "soft", "timeo=600", "retrans=2"]
    assert option_drift(live, wanted).matches


def test_default_expected_is_recommended() -> None:
    assert option_drift(list(RECOMMENDED_OPTIONS)).expected == RECOMMENDED_OPTIONS


# --- properties ----------------------------------------------------------------------------


def _escape(text: str) -> str:
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in text)


_path = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)
_token = st.text(
    st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters=",-\\"),
    min_size=1,
    max_size=12,
)
_entry = st.builds(
    MountInfo,
    mount_id=st.integers(0, 2**31),
    parent_id=st.integers(0, 2**31),
    major=st.integers(0, 4095),
    minor=st.integers(0, 2**20),
    root=_path.map(lambda p: "/" + p),
    mount_point=_path.map(lambda p: "/" + p),
    mount_options=st.lists(_token, min_size=1, max_size=5).map(tuple),  # always rw or ro
    optional_fields=st.lists(_token, max_size=3).map(tuple),
    fs_type=st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9_]{1,8})?", fullmatch=True),
    source=_path,
    super_options=st.lists(_token, max_size=6).map(tuple),
)


def _format(m: MountInfo) -> str:
    return " ".join(
        [
            str(m.mount_id), str(m.parent_id), f"{m.major}:{m.minor}", _escape(m.root),
            _escape(m.mount_point), ",".join(m.mount_options), *m.optional_fields, "-",
            m.fs_type, _escape(m.source), ",".join(m.super_options),
        ]
    )  # fmt: skip


@given(_entry)
def test_format_then_parse_round_trips(entry: MountInfo) -> None:
    assert parse_mountinfo_line(_format(entry)) == entry


@given(st.lists(_entry, max_size=5))
def test_table_round_trips(entries: list[MountInfo]) -> None:
    assert parse_mountinfo("\n".join(_format(e) for e in entries) + "\n", strict=True) == entries


@given(st.text(max_size=300))
def test_garbage_line_is_parsed_or_a_mount_error(text: str) -> None:
    with contextlib.suppress(MountError):
        parse_mountinfo_line(text)


@given(st.lists(st.text(max_size=120) | st.sampled_from([EFS_KERNEL, ROOT, FUSE]), max_size=8))
def test_garbage_table_never_raises_and_keeps_good_lines(lines: list[str]) -> None:
    mounts = parse_mountinfo("\n".join(lines))
    assert sum(line in (EFS_KERNEL, ROOT, FUSE) for line in lines) <= len(mounts)
    for m in mounts:
        option_drift(m.options)


@given(
    st.sampled_from([EFS_KERNEL, EFS_TLS, EFS_BAD, EFS_NOAC, FUSE]),
    st.lists(st.tuples(st.integers(0, 400), st.sampled_from([" ", "-", ":", "\\", "", "x", "\n"])),
             max_size=6),
)  # fmt: skip
def test_mangled_real_lines_are_parsed_or_a_mount_error(line: str, edits: list) -> None:
    for position, text in edits:  # replace one character (or delete it, for "")
        position %= len(line) or 1
        line = line[:position] + text + line[position + 1 :]
    try:
        m = parse_mountinfo_line(line)
    except MountError:
        return
    option_drift(m.options)
    assert isinstance(m.mount_point, str) and m.fs_type
