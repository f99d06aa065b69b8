"""The probe: what one measurement of a mount does. Runs in a child process.

``run_probe`` is called by :func:`efsray.deadline.run_in_child` (JSON in, JSON out), so a
mount that hangs in the kernel hangs only the child, which the parent kills at its deadline.
It measures, in a private directory ``.efsray-probe-<host>-<pid>-<token>`` under the mount:

- space and inodes (``statvfs``);
- latency of ``samples`` 4 KiB writes, fsyncs and reads at distinct offsets of one file;
- metadata operations: create, stat, rename and unlink of ``metadata_files`` empty files;
- sequential write and read throughput of a ``throughput_bytes`` file in ``block_bytes``
  blocks, the same access pattern as ``fio --rw=write|read --ioengine=psync``.

The page cache is kept out of the way: with ``O_DIRECT`` where the filesystem allows it
(page-aligned buffers from ``mmap``), else with ``fsync`` after writing and
``posix_fadvise(DONTNEED)`` before reading (plus ``FADV_RANDOM`` so readahead cannot serve the
next latency sample). The directory is removed when the probe ends; one left by a probe that
was killed is removed by the next probe (same host and its process gone, or older than
``stale_after`` seconds for other hosts sharing the volume).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import random
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROBE_PREFIX",
    "ProbeConfig",
    "cleanup_stale_probes",
    "drop_page_cache",
    "probe_dir_name",
    "run_probe",
]

logger = logging.getLogger("efsray.monitor")

PROBE_PREFIX = ".efsray-probe-"
IO_BYTES = 4096
_NAME = re.compile(r"^\.efsray-probe-(?P<host>[A-Za-z0-9.-]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)$")
_ALIGN = 4096


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    """How much one probe does. A count or size of 0 skips that part.

    The defaults finish in about 2 s on EFS General Purpose (≈1 ms per read, ≈3 ms per write
    and fsync, ≈60 MiB/s for one stream) and move 64 MiB.
    """

    latency_samples: int = 100
    metadata_files: int = 50
    throughput_bytes: int = 32 * 1024 * 1024
    block_bytes: int = 1024 * 1024
    direct_io: str = "auto"  # "auto": O_DIRECT if the filesystem takes it; "never"; "always"
    stale_after: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("latency_samples", "metadata_files", "throughput_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} is negative; use 0 to skip")
        if self.block_bytes <= 0 or self.block_bytes % _ALIGN:
            raise ValueError(
                f"block_bytes={self.block_bytes} must be a positive multiple of {_ALIGN}"
            )
        if self.throughput_bytes % _ALIGN:
            raise ValueError(
                f"throughput_bytes={self.throughput_bytes} must be a multiple of {_ALIGN}"
            )
        if self.direct_io not in ("auto", "never", "always"):
            raise ValueError(f"direct_io={self.direct_io!r}: use 'auto', 'never' or 'always'")
        if self.stale_after <= 0:
            raise ValueError(f"stale_after={self.stale_after} must be > 0 seconds")

    def to_payload(self) -> dict[str, Any]:
        return {
            "latency_samples": self.latency_samples,
            "metadata_files": self.metadata_files,
            "throughput_bytes": self.throughput_bytes,
            "block_bytes": self.block_bytes,
            "direct_io": self.direct_io,
            "stale_after": self.stale_after,
        }


def probe_dir_name(host: str | None = None, pid: int | None = None) -> str:
    """``.efsray-probe-<host>-<pid>-<token>``: recognisable, and owned by one process."""
    tag = _host_tag(host or socket.gethostname())
    return f"{PROBE_PREFIX}{tag}-{os.getpid() if pid is None else pid}-{secrets.token_hex(4)}"


def _host_tag(host: str) -> str:
    """The host as it appears in probe directory names."""
    return re.sub(r"[^A-Za-z0-9.]", ".", host)[:64] or "host"


def run_probe(
    path: str,
    latency_samples: int = 100,
    metadata_files: int = 50,
    throughput_bytes: int = 32 * 1024 * 1024,
    block_bytes: int = 1024 * 1024,
    direct_io: str = "auto",
    stale_after: float = 3600.0,
) -> dict[str, Any]:
    """Probe the filesystem at ``path`` once; return plain JSON data (times in seconds)."""
    config = ProbeConfig(
        latency_samples, metadata_files, throughput_bytes, block_bytes, direct_io, stale_after
    )
    started = time.perf_counter()
    space = _statvfs(path)
    stale_removed = cleanup_stale_probes(path, stale_after=config.stale_after)
    probe_dir = os.path.join(path, probe_dir_name())
    os.mkdir(probe_dir, 0o700)
    result: dict[str, Any] = {"path": path, "space": space, "stale_removed": stale_removed}
    try:
        direct = _direct_io_works(probe_dir, config.direct_io)
        result["direct_io"] = direct
        result["samples"] = _latency(probe_dir, config.latency_samples, direct)
        result["samples"].update(_metadata(probe_dir, config.metadata_files))
        result["throughput"] = _throughput(
            probe_dir, config.throughput_bytes, config.block_bytes, direct
        )
    finally:
        shutil.rmtree(probe_dir)
    result["probe_seconds"] = time.perf_counter() - started
    return result


def cleanup_stale_probes(path: str, *, stale_after: float, now: float | None = None) -> int:
    """Remove probe directories whose probe is gone; return how many were removed.

    A directory of this host whose process is gone is removed at once; any other (another
    host's, or a pid that was reused) only once it is older than ``stale_after`` seconds, so
    a probe running on another host of the shared volume is never pulled from under it.
    """
    now = time.time() if now is None else now
    here = _host_tag(socket.gethostname())
    removed = 0
    with os.scandir(path) as entries:
        candidates = [e for e in entries if e.name.startswith(PROBE_PREFIX)]
    for entry in candidates:
        match = _NAME.match(entry.name)
        ours_and_dead = (
            match is not None and match["host"] == here and not _pid_alive(int(match["pid"]))
        )
        if not ours_and_dead:  # only the others need their age (a stat: a round trip on NFS)
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime <= stale_after:
                    continue
            except FileNotFoundError:
                continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:
            continue  # another host's probe cleaned it up at the same time
    return removed


def drop_page_cache(fd: int, offset: int = 0, length: int = 0) -> None:
    """Evict a file's (clean) pages from the page cache so the next read goes to the server."""
    os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _statvfs(path: str) -> dict[str, int]:
    st = os.statvfs(path)
    frsize = st.f_frsize or st.f_bsize
    return {
        "total_bytes": st.f_blocks * frsize,
        "free_bytes": st.f_bavail * frsize,  # what an unprivileged writer can still use
        "used_bytes": (st.f_blocks - st.f_bfree) * frsize,
        "inodes_total": st.f_files,
        "inodes_free": st.f_favail,
        "inodes_used": max(0, st.f_files - st.f_ffree),
    }


@contextlib.contextmanager
def _aligned(size: int) -> Iterator[mmap.mmap]:
    """A page-aligned buffer (anonymous mmap), as O_DIRECT requires, of random bytes.

    Random, not constant: a server or disk that compresses or deduplicates would make a
    constant pattern look faster than real data.
    """
    buf = mmap.mmap(-1, max(size, _ALIGN))
    try:
        buf.write(os.urandom(len(buf)))
        buf.seek(0)
        yield buf
    finally:
        buf.close()


def _open(path: str, flags: int, direct: bool) -> int:
    return os.open(path, flags | (os.O_DIRECT if direct else 0), 0o600)


def _direct_io_works(probe_dir: str, mode: str) -> bool:
    if mode == "never":
        return False
    test = os.path.join(probe_dir, "direct-test")
    try:
        fd = _open(test, os.O_CREAT | os.O_RDWR | os.O_TRUNC, direct=True)
        try:
            with _aligned(_ALIGN) as buf:
                os.pwrite(fd, buf, 0)
                os.preadv(fd, [buf], 0)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP) or mode == "always":
            raise
        logger.debug("O_DIRECT refused in %s (%s): fsync + fadvise instead", probe_dir, exc)
        return False
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(test)
    return True


def _latency(probe_dir: str, samples: int, direct: bool) -> dict[str, list[float]]:
    """4 KiB writes, fsyncs and reads at ``samples`` distinct offsets of one file."""
    out: dict[str, list[float]] = {"write": [], "fsync": [], "read": []}
    if samples == 0:
        return out
    path = os.path.join(probe_dir, "latency")
    clock = time.perf_counter
    offsets = [i * IO_BYTES for i in range(samples)]
    with _aligned(IO_BYTES) as buf:
        # write: one 4 KiB block reaching the filesystem (O_DIRECT, else write + fdatasync)
        fd = _open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, direct)
        try:
            for off in offsets:
                t0 = clock()
                os.pwrite(fd, buf, off)
                if not direct:
                    os.fdatasync(fd)
                out["write"].append(clock() - t0)
        finally:
            os.close(fd)
        # fsync: the cost of making one buffered 4 KiB write durable
        fd = os.open(path, os.O_RDWR)
        try:
            for off in offsets:
                os.pwrite(fd, buf, off)
                t0 = clock()
                os.fsync(fd)
                out["fsync"].append(clock() - t0)
            drop_page_cache(fd)
        finally:
            os.close(fd)
        # read: 4 KiB at each offset once, in random order, never from the page cache
        order = offsets[:]
        random.Random(samples).shuffle(order)  # noqa: S311 - an order, not a secret
        fd = _open(path, os.O_RDONLY, direct)
        try:
            if not direct:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
            for off in order:
                if not direct:
                    drop_page_cache(fd, off, IO_BYTES)
                t0 = clock()
                n = os.preadv(fd, [buf], off)
                out["read"].append(clock() - t0)
                if n != IO_BYTES:
                    raise OSError(errno.EIO, f"short read of {n} bytes at {off} in {path}")
        finally:
            os.close(fd)
        os.unlink(path)
    return out


def _metadata(probe_dir: str, files: int) -> dict[str, list[float]]:
    """Create, stat, rename and unlink ``files`` empty files; each call timed on its own."""
    out: dict[str, list[float]] = {"create": [], "stat": [], "rename": [], "unlink": []}
    if files == 0:
        return out
    clock = time.perf_counter
    names = [os.path.join(probe_dir, f"m{i:06d}") for i in range(files)]
    for name in names:
        t0 = clock()
        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        out["create"].append(clock() - t0)
    for name in names:
        t0 = clock()
        os.stat(name)
        out["stat"].append(clock() - t0)
    for name in names:
        t0 = clock()
        os.rename(name, name + ".r")
        out["rename"].append(clock() - t0)
    for name in names:
        t0 = clock()
        os.unlink(name + ".r")
        out["unlink"].append(clock() - t0)
    return out


def _throughput(probe_dir: str, size: int, block: int, direct: bool) -> dict[str, Any]:
    """Sequential write then read of ``size`` bytes in ``block``-byte pread/pwrite calls."""
    result: dict[str, Any] = {"bytes": size, "block_bytes": block}
    if size == 0:
        return result
    path = os.path.join(probe_dir, "sequential")
    clock = time.perf_counter
    with _aligned(block) as buf, memoryview(buf) as view:
        fd = _open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, direct)
        try:
            t0 = clock()
            off = 0
            while off < size:
                n = min(block, size - off)
                off += os.pwrite(fd, view[:n], off)
            if not direct:
                os.fsync(fd)  # buffered data is not written until it reaches the server
            result["write_seconds"] = clock() - t0
        finally:
            os.close(fd)
        fd = _open(path, os.O_RDONLY, direct)
        try:
            if not direct:
                drop_page_cache(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            t0 = clock()
            off = 0
            while off < size:
                n = os.preadv(fd, [view[: min(block, size - off)]], off)
                if n <= 0:
                    raise OSError(errno.EIO, f"unexpected end of {path} at {off} of {size}")
                off += n
            result["read_seconds"] = clock() - t0
        finally:
            os.close(fd)
    os.unlink(path)
    return result
