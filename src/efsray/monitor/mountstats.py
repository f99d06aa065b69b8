"""The kernel's own NFS client counters, from ``/proc/self/mountstats``.

Every NFS mount has a block like this (``statvers=1.1``; older kernels print 8 per-op columns,
newer ones add a 9th, the error count)::

    device fs-1.efs.us-east-1.amazonaws.com:/ mounted on /mnt/efs with fstype nfs4 statvers=1.1
            opts:   rw,vers=4.1,rsize=1048576,wsize=1048576,hard,proto=tcp,timeo=600,retrans=2
            age:    3542
            events: 114 1579 5 3 132 20 3019 1 2 3 4 5 115 1 4 1 2 4 3 4 5 6 7 8 9 0 1
            bytes:  1 2 3 4 5 6 7 8
            RPC iostats version: 1.1  p/v: 100003/4 (nfs)
            xprt:   tcp 0 1 2 0 23 29 29 0 30 0 2 1 1
            per-op statistics
                    READ: ops trans timeouts bytes_sent bytes_recv queue_ms rtt_ms exec_ms [errors]

Non-NFS mounts are one ``device ... with fstype ...`` line. The parser never raises on odd
input: a line it cannot read is skipped (and logged at debug level), so one garbled counter
cannot blind the monitor to the rest. Paths are unescaped (the kernel writes a space in a
mount point as ``\\040``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from efsray.mount.mountinfo import find_mount, unescape
from efsray.mount.options import split_options

__all__ = [
    "BYTE_COUNTER_NAMES",
    "EVENT_NAMES",
    "ByteCounters",
    "MountStats",
    "OpInterval",
    "OpStats",
    "Transport",
    "mount_for_path",
    "op_intervals",
    "parse_mountstats",
    "read_mountstats",
]

logger = logging.getLogger("efsray.monitor")

# include/linux/nfs_iostat.h, in the order the kernel prints them.
EVENT_NAMES: tuple[str, ...] = (
    "inoderevalidate",
    "dentryrevalidate",
    "datainvalidate",
    "attrinvalidate",
    "vfsopen",
    "vfslookup",
    "vfsaccess",
    "vfsupdatepage",
    "vfsreadpage",
    "vfsreadpages",
    "vfswritepage",
    "vfswritepages",
    "vfsgetdents",
    "vfssetattr",
    "vfsflush",
    "vfsfsync",
    "vfslock",
    "vfsrelease",
    "congestionwait",
    "setattrtrunc",
    "extendwrite",
    "sillyrename",
    "shortread",
    "shortwrite",
    "delay",
    "pnfs_read",
    "pnfs_write",
)
BYTE_COUNTER_NAMES: tuple[str, ...] = (
    "normal_read",
    "normal_write",
    "direct_read",
    "direct_write",
    "server_read",
    "server_write",
    "read_pages",
    "write_pages",
)

_HEADER = re.compile(
    r"^device (?P<device>\S+) mounted on (?P<mount>\S+) with fstype (?P<fstype>\S+)"
    r"(?: statvers=(?P<statvers>\S+))?\s*$"
)
_RPC = re.compile(r"^RPC iostats version:\s*(?P<version>\S+)")
_OP = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*):\s+(?P<values>[-\d\s]+)$")
_MAX_COUNTER = 2**64  # kernel counters are u64; anything else is garbage


@dataclass(frozen=True, slots=True)
class OpStats:
    """Cumulative counters of one RPC operation (READ, WRITE, GETATTR, ...) since mount.

    Times are the kernel's sums in milliseconds over all calls: ``queue_ms`` waiting to be
    sent, ``rtt_ms`` on the wire and at the server, ``execute_ms`` from the first queueing to
    the reply (what the caller waited). ``errors`` exists only on kernels that print 9 columns.
    """

    operations: int
    transmissions: int
    major_timeouts: int
    bytes_sent: int
    bytes_received: int
    queue_ms: int
    rtt_ms: int
    execute_ms: int
    errors: int | None = None

    @property
    def retransmissions(self) -> int:
        return max(0, self.transmissions - self.operations)


@dataclass(frozen=True, slots=True)
class ByteCounters:
    """The ``bytes:`` line: what applications read/wrote, and what went over the wire."""

    normal_read: int
    normal_write: int
    direct_read: int
    direct_write: int
    server_read: int
    server_write: int
    read_pages: int
    write_pages: int


@dataclass(frozen=True, slots=True)
class Transport:
    """One ``xprt:`` line (one per connection with ``nconnect``)."""

    protocol: str
    values: tuple[int, ...]

    @property
    def sends(self) -> int | None:
        return self._at(2 if self.protocol == "udp" else 5)

    @property
    def receives(self) -> int | None:
        return self._at(3 if self.protocol == "udp" else 6)

    def _at(self, index: int) -> int | None:
        return self.values[index] if index < len(self.values) else None


@dataclass(frozen=True, slots=True)
class MountStats:
    """One mount's block. ``statvers`` is None for mounts that export no statistics."""

    device: str
    mount_point: str
    fstype: str
    statvers: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    age_seconds: int | None = None
    events: Mapping[str, int] = field(default_factory=dict)
    bytes: ByteCounters | None = None
    rpc_version: str | None = None
    transports: tuple[Transport, ...] = ()
    operations: Mapping[str, OpStats] = field(default_factory=dict)

    @property
    def is_nfs(self) -> bool:
        return self.fstype in ("nfs", "nfs4") and self.statvers is not None


@dataclass(frozen=True, slots=True)
class OpInterval:
    """One operation between two readings: counts, and mean times per call in seconds."""

    operations: int
    retransmissions: int
    major_timeouts: int
    errors: int
    mean_rtt_seconds: float | None
    mean_execute_seconds: float | None
    mean_queue_seconds: float | None


class _Block:
    """Mutable accumulator for one ``device`` block while parsing."""

    def __init__(self, device: str, mount: str, fstype: str, statvers: str | None) -> None:
        self.device, self.mount, self.fstype, self.statvers = device, mount, fstype, statvers
        self.options: dict[str, str] = {}
        self.age: int | None = None
        self.events: dict[str, int] = {}
        self.bytes: ByteCounters | None = None
        self.rpc_version: str | None = None
        self.transports: list[Transport] = []
        self.ops: dict[str, OpStats] = {}
        self.last_key = ""

    def freeze(self) -> MountStats:
        return MountStats(
            device=self.device,
            mount_point=self.mount,
            fstype=self.fstype,
            statvers=self.statvers,
            options=self.options,
            age_seconds=self.age,
            events=self.events,
            bytes=self.bytes,
            rpc_version=self.rpc_version,
            transports=tuple(self.transports),
            operations=self.ops,
        )


def parse_mountstats(text: str) -> list[MountStats]:
    """Every mount in ``text`` (the contents of /proc/PID/mountstats), in file order."""
    mounts: list[MountStats] = []
    block: _Block | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        header = _HEADER.match(line)
        if header is not None:
            if block is not None:
                mounts.append(block.freeze())
            block = _Block(
                unescape(header["device"]),
                unescape(header["mount"]),
                header["fstype"],
                header["statvers"],
            )
            continue
        if block is None:
            logger.debug("mountstats line %d outside any device block: %r", lineno, line[:80])
            continue
        try:
            _parse_line(block, line)
        except ValueError as exc:
            logger.debug("mountstats line %d skipped (%s): %r", lineno, exc, line[:120])
    if block is not None:
        mounts.append(block.freeze())
    return mounts


def read_mountstats(path: str | os.PathLike[str] = "/proc/self/mountstats") -> list[MountStats]:
    """Read and parse a mountstats file. Reading procfs never waits for an NFS server."""
    with open(path, "rb") as f:
        return parse_mountstats(f.read().decode("utf-8", errors="surrogateescape"))


def mount_for_path(mounts: Iterable[MountStats], path: str | os.PathLike[str]) -> MountStats | None:
    """The mount that holds ``path``: the longest mount point that is a prefix of it.

    Purely lexical (no stat, no realpath), so it cannot block on a hung mount; pass an
    absolute, symlink-free path. When two mounts share a mount point the later one (the one
    on top) wins, as in the kernel's table.
    """
    return find_mount(mounts, path)


def op_intervals(
    previous: MountStats | None, current: MountStats
) -> tuple[dict[str, OpInterval], bool]:
    """Per-operation counts and mean latencies between two readings of one mount.

    Returns ``(intervals, since_mount)``. ``since_mount`` is True when there is no usable
    previous reading (first sample, a remount, counters that went backwards): the intervals
    then cover everything since the mount. Operations with no calls in the interval have
    ``None`` mean times.
    """
    since_mount = previous is None or not _continues(previous, current)
    out: dict[str, OpInterval] = {}
    for name, cur in current.operations.items():
        prev = None if since_mount or previous is None else previous.operations.get(name)
        d_ops = cur.operations - (prev.operations if prev else 0)
        d_trans = cur.transmissions - (prev.transmissions if prev else 0)
        d_rtt = cur.rtt_ms - (prev.rtt_ms if prev else 0)
        d_exe = cur.execute_ms - (prev.execute_ms if prev else 0)
        d_queue = cur.queue_ms - (prev.queue_ms if prev else 0)
        d_tmo = cur.major_timeouts - (prev.major_timeouts if prev else 0)
        d_err = (cur.errors or 0) - ((prev.errors or 0) if prev else 0)
        out[name] = OpInterval(
            operations=d_ops,
            retransmissions=max(0, d_trans - d_ops),
            major_timeouts=max(0, d_tmo),
            errors=max(0, d_err),
            mean_rtt_seconds=d_rtt / d_ops / 1000.0 if d_ops > 0 else None,
            mean_execute_seconds=d_exe / d_ops / 1000.0 if d_ops > 0 else None,
            mean_queue_seconds=d_queue / d_ops / 1000.0 if d_ops > 0 else None,
        )
    return out, since_mount


def _continues(previous: MountStats, current: MountStats) -> bool:
    """True when ``current`` is a later reading of the same mount instance."""
    if previous.device != current.device or previous.mount_point != current.mount_point:
        return False
    if (
        previous.age_seconds is not None
        and current.age_seconds is not None
        and current.age_seconds < previous.age_seconds
    ):
        return False
    for name, cur in current.operations.items():
        prev = previous.operations.get(name)
        if prev is not None and (
            cur.operations < prev.operations
            or cur.transmissions < prev.transmissions
            or cur.rtt_ms < prev.rtt_ms
            or cur.execute_ms < prev.execute_ms
        ):
            return False
    return True


def _parse_line(block: _Block, line: str) -> None:
    if line == "per-op statistics":
        block.last_key = "per-op"
        return
    rpc = _RPC.match(line)
    if rpc is not None:
        block.rpc_version = rpc["version"]
        block.last_key = "rpc"
        return
    op = _OP.match(line)
    if op is not None and block.last_key == "per-op":
        block.ops[op["name"]] = _op_stats(op["values"].split())
        return
    key, sep, value = line.partition(":")
    if not sep or " " in key:
        if block.last_key == "opts" and "=" in line and ":" not in line:
            # A wrapped options line (seen in hand-edited captures): continue the options.
            block.options.update(_options(line))
            return
        raise ValueError("not a 'key: value' line")
    value = value.strip()
    block.last_key = key
    if key == "opts":
        block.options.update(_options(value))
    elif key == "age":
        block.age = _counter(value.split()[0]) if value else None
    elif key == "events":
        numbers = [_counter(v) for v in value.split()]
        block.events = dict(zip(EVENT_NAMES, numbers, strict=False))
    elif key == "bytes":
        numbers = [_counter(v) for v in value.split()]
        if len(numbers) < len(BYTE_COUNTER_NAMES):
            raise ValueError(f"bytes: has {len(numbers)} values, expected 8")
        block.bytes = ByteCounters(*numbers[: len(BYTE_COUNTER_NAMES)])
    elif key == "xprt":
        parts = value.split()
        if not parts:
            raise ValueError("empty xprt line")
        block.transports.append(Transport(parts[0], tuple(_counter(v) for v in parts[1:])))
    # impl_id, caps, nfsv4, sec, fsc and future keys: not needed, ignored.


def _op_stats(values: list[str]) -> OpStats:
    if len(values) < 8:
        raise ValueError(f"per-op line has {len(values)} values, expected 8 or 9")
    n = [_counter(v) for v in values[:9]]
    return OpStats(
        operations=n[0],
        transmissions=n[1],
        major_timeouts=n[2],
        bytes_sent=n[3],
        bytes_received=n[4],
        queue_ms=n[5],
        rtt_ms=n[6],
        execute_ms=n[7],
        errors=n[8] if len(n) > 8 else None,
    )


def _counter(text: str) -> int:
    value = int(text)
    if not 0 <= value < _MAX_COUNTER:
        raise ValueError(f"counter {text[:30]} is outside 0..2**64")
    return value


def _options(text: str) -> dict[str, str]:
    pairs = (option.partition("=") for option in split_options(text))
    return {name: value for name, _, value in pairs}
