"""The health probe itself. It runs in a deadline child (``efsray.deadline.run_in_child``),
never in the caller: any call here may block forever on a hung mount.

Standard library only, so the child starts fast. Each probe writes its own uniquely named
file (hosts and processes probe the same EFS at once), times create+write, fsync, close,
read-back and unlink separately, and reports the volume's space. A probe killed mid-way can
leave its small file behind; the next probe on the same host removes such files once they
are ten minutes old.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import socket
import time
from typing import Any

PREFIX = ".efsray-health-"
STALE_AFTER_S = 600.0


def probe(mount_path: str, size: int = 4096, lock_path: str | None = None) -> dict[str, Any]:
    """Write, fsync, read back and delete a small file under ``mount_path``; measure each step
    in milliseconds and read the volume's space. OSErrors propagate to the parent.

    With ``lock_path`` (a file on a local disk), the probe first takes an exclusive lock on it
    and holds it to the end. A probe stuck in the kernel on a hung mount keeps holding it, so
    the next probes wait on the lock, where SIGKILL works, instead of piling up unkillable
    behind it: at most one stuck probe per mount path, however long the outage lasts.
    """
    lock_fd = _lock(lock_path) if lock_path else None
    try:
        return _probe(mount_path, size)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _lock(lock_path: str) -> int | None:
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None  # e.g. another user's lock file: probe unlocked rather than not at all
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits (killably) behind a stuck earlier probe
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _probe(mount_path: str, size: int) -> dict[str, Any]:
    if not os.path.isdir(mount_path):
        raise FileNotFoundError(2, f"mount path {mount_path!r} is not a directory")
    host = socket.gethostname().replace("/", "_")[:40]
    name = f"{PREFIX}{host}-{os.getpid()}-{secrets.token_hex(6)}"
    path = os.path.join(mount_path, name)
    payload = (f"efsray health {name}\n".encode() * (size // 32 + 1))[:size]
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            t1 = time.perf_counter()
            os.fsync(fd)
            t2 = time.perf_counter()
        finally:
            os.close(fd)  # NFS reports write errors at close: let them raise
        t3 = time.perf_counter()
        with open(path, "rb") as f:
            content = f.read()
        t4 = time.perf_counter()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    t5 = time.perf_counter()
    st = os.statvfs(mount_path)
    removed = _remove_stale(mount_path, host)
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    available = st.f_bavail * st.f_frsize
    return {
        "write_time_ms": _ms(t1 - t0 + (t3 - t2)),  # create + write + close
        "fsync_time_ms": _ms(t2 - t1),
        "read_time_ms": _ms(t4 - t3),
        "delete_time_ms": _ms(t5 - t4),
        "accessible": content == payload,
        "total_bytes": total,
        "free_bytes": free,
        "available_bytes": available,
        "used_percent": round(100.0 * (total - free) / total, 2) if total else None,
        "files_free": st.f_favail,
        "stale_removed": removed,
    }


def _remove_stale(mount_path: str, host: str) -> int:
    """Remove this host's probe files older than STALE_AFTER_S (left by killed probes)."""
    mine = f"{PREFIX}{host}-"
    removed = 0
    now = time.time()
    with os.scandir(mount_path) as entries:
        for entry in entries:
            if not entry.name.startswith(mine):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER_S:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue  # another probe on this host removed it first
    return removed


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
