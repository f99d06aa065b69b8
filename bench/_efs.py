"""Where the benchmarks run, what each operation costs in server round trips, and what that
would take on Amazon EFS.

A *medium* is a directory to benchmark in plus, where there is a server, a source of counters:

- ``local``: a local-disk directory; no server, no counters.
- ``efs-like``: a simulated EFS mount (efsray.simfs, profile efs-gp by default) with the
  attribute cache of an EFS client (acregmin 3 s); counters from the simulator, which counts
  every FUSE request by kind.
- ``nfs:PATH``: an existing kernel NFS mount (the QEMU guests of the NFS-client tests, or a
  real EFS mount); counters from the Linux NFS client's own per-operation statistics in
  ``/proc/self/mountstats``: the figure of record where it exists. This is the seam for the
  guest runner: ``python bench/market_data.py --media nfs:/mnt/efs`` inside a guest.

Counts are cumulative snapshots; an operation's round trips are the difference of the
snapshots around it (:func:`measured`). A snapshot is taken outside the timed region.

The EFS model (:data:`EFS_GP_MS`, :data:`EFS_CLIENT_MIB_S`) turns counts into a modelled time:
round trips x AWS's published per-operation latency for General Purpose file systems plus
bytes / per-client throughput. It is one table, documented in docs/performance.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# --- the model ------------------------------------------------------------------------------

#: Milliseconds per round trip of each kind on EFS General Purpose (Regional), from AWS's
#: published figures (docs.aws.amazon.com/efs/latest/ug/performance.html: reads "as low as
#: 250 us" to ~1 ms, writes ~2.7 ms) and what one EC2 client in the same AZ sees: ~0.6 ms a
#: data READ, ~2.7 ms anything the server must make durable (WRITE, COMMIT, and namespace
#: changes, which EFS also stores durably across AZs), ~1 ms a metadata call past the client's
#: attribute cache. Keys are the simulator's FUSE request kinds and the kernel NFS client's
#: operation names (lower case); ``release``/``releasedir`` are the simulator's asynchronous
#: last-close notifications, which nobody waits for.
EFS_GP_MS: Mapping[str, float] = {
    # data
    "read": 0.6,
    "write": 2.7,
    "fsync": 2.7,
    "fsyncdir": 2.7,
    "commit": 2.7,
    # metadata past the attribute cache (simfs's getattr includes LOOKUP)
    "getattr": 1.0,
    "lookup": 1.0,
    "access": 1.0,
    "open": 1.0,
    "opendir": 1.0,
    "flush": 1.0,  # close(): NFSv4 CLOSE; dirty data travels as write/commit, counted apart
    "close": 1.0,
    "statfs": 1.0,
    "readlink": 1.0,
    "readdir": 1.0,  # per READDIR reply (~128 names)
    "open_noattr": 1.0,
    "lookupp": 1.0,
    "delegreturn": 1.0,
    # namespace changes: durable on the server
    "create": 2.7,
    "mknod": 2.7,
    "mkdir": 2.7,
    "link": 2.7,
    "rename": 2.7,
    "unlink": 2.7,
    "remove": 2.7,
    "rmdir": 2.7,
    "symlink": 2.7,
    "chmod": 2.7,
    "chown": 2.7,
    "truncate": 2.7,
    "utimens": 2.7,
    "setattr": 2.7,
    # not round trips the caller waits for
    "release": 0.0,
    "releasedir": 0.0,
}
#: Kinds that are not counted as round trips (asynchronous notifications).
NOT_ROUND_TRIPS = frozenset({"release", "releasedir"})
#: Unknown kinds are charged as a metadata call.
DEFAULT_MS = 1.0
#: Per-client throughput, MiB/s: EFS's per-client limit with the standard NFS client (500
#: MiB/s; 1,500 with efs-utils' efs-proxy on Elastic throughput).
EFS_CLIENT_MIB_S = 500.0


def round_trips(ops: Mapping[str, float]) -> float:
    """Server round trips in ``ops`` (counts by kind)."""
    return sum(n for kind, n in ops.items() if kind not in NOT_ROUND_TRIPS)


def modelled_seconds(ops: Mapping[str, float], bytes_moved: float = 0.0) -> float:
    """Round trips x EFS GP latency + bytes / per-client throughput, in seconds."""
    latency = sum(n * EFS_GP_MS.get(kind, DEFAULT_MS) for kind, n in ops.items()) / 1e3
    return latency + bytes_moved / (EFS_CLIENT_MIB_S * 2**20)


def model_table() -> str:
    """The model as a markdown table (docs/performance.md and every results file)."""
    by_cost: dict[float, list[str]] = {}
    for kind, ms in EFS_GP_MS.items():
        by_cost.setdefault(ms, []).append(kind)
    lines = ["| ms per round trip | kinds |", "|---:|---|"]
    for ms, kinds in sorted(by_cost.items(), reverse=True):
        lines.append(f"| {ms:g} | {', '.join(kinds)} |")
    lines.append(f"| bytes | / {EFS_CLIENT_MIB_S:g} MiB/s per client |")
    return "\n".join(lines)


def model_json() -> dict[str, Any]:
    """The model's parameters, as every results JSON records them (``"model"``)."""
    return {"ms": dict(EFS_GP_MS), "client_mib_s": EFS_CLIENT_MIB_S}


# --- counters ---------------------------------------------------------------------------------


WSIZE = 1 << 20  # EFS's wsize (and rsize): 1 MiB


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Cumulative counts: operations by kind, and bytes read and written at the server.

    ``files_written`` (a difference only, from the simulator's trace) is how many files the
    ``write`` requests went to: see :meth:`nfs_writes`."""

    ops: Mapping[str, int]
    bytes_read: int = 0
    bytes_written: int = 0
    files_written: int | None = None

    def nfs_ops(self) -> dict[str, int]:
        """The counts with ``write`` as an NFS client sends them: the simulator counts one
        WRITE per ``write()`` call (FUSE, no write-back cache), an NFS client buffers and
        sends one WRITE per wsize of each file (flushed at fsync or close). Estimated as
        max(files written, ceil(bytes / wsize)): exact when no file takes more than 1 MiB
        in one call. Unchanged where the counts come from the NFS client itself."""
        ops = dict(self.ops)
        if self.files_written is not None and ops.get("write"):
            ops["write"] = max(self.files_written, -(-self.bytes_written // WSIZE))
        return ops

    def __sub__(self, before: Snapshot) -> Snapshot:
        ops = Counter(self.ops)
        ops.subtract(before.ops)
        return Snapshot(
            {k: v for k, v in sorted(ops.items()) if v},
            self.bytes_read - before.bytes_read,
            self.bytes_written - before.bytes_written,
        )


class CounterSource(Protocol):
    """Where a medium's round trips are counted."""

    name: str

    def snapshot(self) -> Snapshot: ...


@dataclass(slots=True)
class SimfsCounters:
    """The simulator's FUSE request counters (control socket)."""

    control: Any
    name: str = "simfs"

    def snapshot(self) -> Snapshot:
        c = self.control.counters()
        return Snapshot(dict(c.ops), c.bytes_read, c.bytes_written)


@dataclass(slots=True)
class MountstatsCounters:
    """The Linux NFS client's per-operation counters for the mount holding ``path``
    (``/proc/self/mountstats``, parsed by efsray.monitor.mountstats). Counts RPCs as the
    kernel sent them: LOOKUP and GETATTR apart, READ/WRITE per rsize/wsize request, COMMIT."""

    path: Path
    mountstats: Path = Path("/proc/self/mountstats")
    name: str = "mountstats"

    def snapshot(self) -> Snapshot:
        from efsray.monitor.mountstats import mount_for_path, read_mountstats

        mount = mount_for_path(read_mountstats(self.mountstats), self.path.resolve())
        if mount is None or not mount.is_nfs:
            raise SystemExit(f"{self.path} is not on an NFS mount with statistics")
        ops = {k.lower(): v.operations for k, v in mount.operations.items() if v.operations}
        b = mount.bytes
        return Snapshot(ops, b.server_read if b else 0, b.server_write if b else 0)


@dataclass(slots=True)
class Medium:
    """A directory to benchmark in, and the counters of its server (None on local disk)."""

    name: str
    root: Path
    description: str
    counters: CounterSource | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> Snapshot | None:
        return self.counters.snapshot() if self.counters is not None else None


def measured(medium: Medium, func: Callable[[], Any]) -> tuple[float, Any, Snapshot | None]:
    """Run ``func`` timed; return (seconds, value, the round trips it made or None).

    The snapshots are taken outside the timed region. The simulator's asynchronous
    ``release`` of a file closed at the end of ``func`` may land in the next window; it costs
    nothing in the model and is not a round trip."""
    tracer = medium.counters.control if isinstance(medium.counters, SimfsCounters) else None
    before = medium.snapshot()
    if tracer is not None:
        tracer.start_trace()
    start = time.perf_counter()
    try:
        value = func()
    finally:
        seconds = time.perf_counter() - start
        events = tracer.stop_trace() if tracer is not None else []
    after = medium.snapshot()
    delta = after - before if after is not None and before is not None else None
    if delta is not None and tracer is not None:
        written = {e[1] for e in events if e[0] == "write" and len(e) > 1}
        delta = dataclasses.replace(delta, files_written=len(written))
    return seconds, value, delta


def settle(medium: Medium, quiet: float = 0.05, deadline: float = 5.0) -> None:
    """Wait until the medium's counters stop moving (late asynchronous releases), so that
    they land in no one's window; a no-op without counters."""
    if medium.counters is None:
        return
    end = time.monotonic() + deadline
    last = medium.snapshot()
    while time.monotonic() < end:
        time.sleep(quiet)  # polling the counters: what changes is another process's queue
        now = medium.snapshot()
        if now == last:
            return
        last = now


# --- per-operation tallies ---------------------------------------------------------------------


@dataclass(slots=True)
class OpTally:
    """Every call of one operation of one system on one medium: times and round trips."""

    seconds: list[float] = field(default_factory=list)
    deltas: list[Snapshot] = field(default_factory=list)
    units: float = 0.0  # rows, bytes... the caller's unit of work, summed

    def add(self, seconds: float, delta: Snapshot | None, units: float = 0.0) -> None:
        self.seconds.append(seconds)
        if delta is not None:
            self.deltas.append(delta)
        self.units += units

    def summary(self) -> dict[str, Any]:
        """Median time; mean round trips by kind per call (merges amortized over calls);
        modelled EFS time per call from those means."""
        import statistics

        out: dict[str, Any] = {
            "calls": len(self.seconds),
            "median_s": statistics.median(self.seconds) if self.seconds else None,
            "total_s": sum(self.seconds),
            "units": self.units,
        }
        if self.deltas:
            n = len(self.deltas)
            ops: Counter[str] = Counter()
            nfs: Counter[str] = Counter()
            for d in self.deltas:
                ops.update(d.ops)
                nfs.update(d.nfs_ops())
            mean_ops = {k: v / n for k, v in sorted(ops.items())}
            mean_nfs = {k: v / n for k, v in sorted(nfs.items())}
            read_b = sum(d.bytes_read for d in self.deltas) / n
            written_b = sum(d.bytes_written for d in self.deltas) / n
            out.update(
                round_trips=round_trips(mean_ops),
                ops=mean_ops,
                # writes counted per wsize, as an NFS client sends them (Snapshot.nfs_ops):
                # the figure the budgets and the model use
                round_trips_wsize=round_trips(mean_nfs),
                ops_wsize=mean_nfs,
                bytes_read=read_b,
                bytes_written=written_b,
                modelled_s=modelled_seconds(mean_nfs, read_b + written_b),
                round_trips_min=min(round_trips(d.nfs_ops()) for d in self.deltas),
                round_trips_max=max(round_trips(d.nfs_ops()) for d in self.deltas),
            )
        return out


def simulated_seconds(ops: Mapping[str, float], profile: str) -> float:
    """The latency the simulator slept for ``ops`` (requests as it counted them, by kind) with
    latency ``profile``: a call's measured time minus this is what the client spent itself
    (decoding, Python, the FUSE hand-offs), the part no round-trip saving removes."""
    from efsray.simfs.profiles import OP_CATEGORY, get_profile

    delays = get_profile(profile)
    return sum(
        v * getattr(delays, OP_CATEGORY.get(k, "metadata"))
        for k, v in ops.items()
        if k not in NOT_ROUND_TRIPS
    )


def kinds_cell(ops: Mapping[str, float]) -> str:
    """``getattr 3, read 2, ...`` (largest first), for a markdown cell."""
    items = sorted(
        ((k, v) for k, v in ops.items() if k not in NOT_ROUND_TRIPS and v), key=lambda kv: -kv[1]
    )
    return ", ".join(f"{k} {v:.3g}" for k, v in items) or "-"


# --- media ------------------------------------------------------------------------------------

MEDIA_HELP = (
    "where to run, comma-separated: local (a temp dir, or --workdir), efs-like (a simulated "
    "EFS mount, efsray.simfs), nfs:PATH (an existing NFS mount; round trips from "
    "/proc/self/mountstats)"
)


def add_media_arguments(parser: argparse.ArgumentParser, media: str | None) -> None:
    """--media (unless ``media`` is None: fixed by the script), --profile, --attr-timeout."""
    if media is not None:
        parser.add_argument("--media", default=media, help=MEDIA_HELP)
    parser.add_argument("--profile", default="efs-gp", help="simfs latency profile")
    parser.add_argument(
        "--attr-timeout",
        type=float,
        default=3.0,
        help="simfs attribute cache, s (EFS clients: acregmin 3 s; 0: every lookup a round trip)",
    )


@contextlib.contextmanager
def open_media(
    spec: str,
    *,
    workdir: Path | None = None,
    profile: str = "efs-gp",
    attr_timeout: float = 3.0,
) -> Iterator[list[Medium]]:
    """Mount/prepare every medium of ``spec`` ("local,efs-like,nfs:/mnt"); clean up after.

    A simulated mount's backing directory is created under ``workdir`` (or a temp dir) and
    removed with it; the simulator is stopped by the context manager (by its own pid)."""
    with contextlib.ExitStack() as stack:
        media: list[Medium] = []
        for item in (s.strip() for s in spec.split(",") if s.strip()):
            if item in ("local", "efs-like"):
                base = Path(tempfile.mkdtemp(prefix=f"efsray-bench-{item}-", dir=workdir))
                stack.callback(shutil.rmtree, base, True)
            if item == "local":
                media.append(Medium("local", base, "local disk"))
            elif item == "efs-like":
                from efsray.simfs import SimFSConfig, SimFSProcess

                (base / "mnt").mkdir()
                (base / "backing").mkdir()
                fs = stack.enter_context(
                    SimFSProcess.start(
                        SimFSConfig(
                            mountpoint=base / "mnt",
                            backing=base / "backing",
                            profile=profile,
                            attr_timeout=attr_timeout,
                        )
                    )
                )
                readahead = nfs_readahead(fs.path)
                media.append(
                    Medium(
                        "efs-like",
                        fs.path,
                        f"simulated EFS (efsray.simfs, profile {profile}, attribute cache "
                        f"{attr_timeout:g} s, read-ahead {readahead})",
                        SimfsCounters(fs.control),
                        {"backing": fs.backing, "simfs": fs, "profile": profile},
                    )
                )
            elif item.startswith("nfs:"):
                path = Path(item[4:])
                root = Path(tempfile.mkdtemp(prefix="efsray-bench-", dir=path))
                stack.callback(shutil.rmtree, root, True)
                media.append(
                    Medium("nfs", root, f"kernel NFS mount {path}", MountstatsCounters(root))
                )
            else:
                raise SystemExit(f"unknown medium {item!r}: {MEDIA_HELP}")
        yield media


def nfs_readahead(mount: Path, kib: int = 1024) -> str:
    """Give the FUSE mount an NFS client's read-ahead, so that a sequential read is one READ
    per 1 MiB (rsize=1048576) as on EFS, not one per 128 KiB.

    The kernel caps a FUSE mount's read-ahead at the VM default of 128 KiB whatever the
    filesystem asks for (fuse's INIT can only lower it); the Linux NFS client sets its own to
    15 x rsize. Without this, every large read on the simulator counts 8 READs per MiB.
    Needs root (sysfs); returns what the mount ended with, for the results."""
    st = os.stat(mount)
    knob = Path(f"/sys/class/bdi/{os.major(st.st_dev)}:{os.minor(st.st_dev)}/read_ahead_kb")
    with contextlib.suppress(OSError):
        knob.write_text(f"{kib}\n")
    try:
        return f"{int(knob.read_text())} KiB"
    except (OSError, ValueError):
        return "unknown"


def disk_root(medium: Medium, path: Path) -> Path:
    """Where ``path`` (under the medium) lives on local disk, to measure its size without
    round trips: the simulator's backing directory, or ``path`` itself."""
    if medium.name == "efs-like":
        return Path(medium.extra["backing"]) / path.relative_to(medium.root)
    return path
