"""Mount health that never hangs the caller.

The probe (:mod:`efsray.mount._probe`) runs in a child process under a deadline. On a hung
``hard`` mount the child blocks in the kernel; at the deadline it is killed and reaped (see
:mod:`efsray.deadline`) and the answer is ``status="hung"``. The caller only ever reads
``/proc/self/mountinfo`` itself, which does not touch the mount.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from efsray.deadline import ChildError, run_in_child
from efsray.errors import DeadlineExceeded, EfsrayError, MountError
from efsray.mount.mountinfo import MOUNTINFO, find_mount, read_mountinfo

__all__ = ["HEALTH_EXIT_CODES", "HealthStatus", "MountHealth", "check_health"]

logger = logging.getLogger("efsray.mount")

HealthStatus = Literal["healthy", "hung", "error"]

HEALTH_EXIT_CODES: dict[str, int] = {"healthy": 0, "error": 1, "hung": 6}
"""``efsray health`` exit codes: 0 healthy, 1 error (the probe failed), 6 hung (no answer
within the deadline; 6 is also :class:`~efsray.errors.DeadlineExceeded`'s code). Docker treats
any non-zero as unhealthy; 2 (reserved by Docker) is only used for bad settings."""

Runner = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class MountHealth:
    """One health check. Times are milliseconds; None when the step did not complete."""

    status: HealthStatus
    mount_path: str
    accessible: bool
    write_time_ms: float | None = None
    fsync_time_ms: float | None = None
    read_time_ms: float | None = None
    delete_time_ms: float | None = None
    elapsed_ms: float | None = None
    timeout_s: float | None = None
    total_bytes: int | None = None
    free_bytes: int | None = None
    available_bytes: int | None = None
    used_percent: float | None = None
    files_free: int | None = None
    fs_type: str | None = None
    mount_source: str | None = None
    checked_at: str | None = None
    error: str | None = None

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    @property
    def exit_code(self) -> int:
        """The ``efsray health`` exit code for this status (see HEALTH_EXIT_CODES)."""
        return HEALTH_EXIT_CODES[self.status]

    def as_dict(self) -> dict[str, Any]:
        """The seed's dict: status, write_time_ms, read_time_ms, mount_path, accessible, plus
        every other field; ``error`` only when there is one (as in the seed)."""
        out: dict[str, Any] = {
            "status": self.status,
            "write_time_ms": self.write_time_ms,
            "read_time_ms": self.read_time_ms,
            "mount_path": self.mount_path,
            "accessible": self.accessible,
        }
        for name in self.__dataclass_fields__:
            if name not in out and name != "error":
                out[name] = getattr(self, name)
        if self.error is not None:
            out["error"] = self.error
        return out


def check_health(
    mount_path: str | os.PathLike[str],
    *,
    timeout: float = 5.0,
    mountinfo_path: str | os.PathLike[str] = MOUNTINFO,
    lock_dir: str | os.PathLike[str] | None = None,
    runner: Runner = run_in_child,
) -> MountHealth:
    """Probe ``mount_path`` and answer within ``timeout`` seconds, whatever the mount does.

    Never raises for a sick mount: a probe that failed is ``status="error"`` with the reason,
    one that did not answer in time is ``status="hung"``. Probes of one path on one host take
    turns through a lock file in ``lock_dir`` (default: the temp directory), so that a hung
    mount holds at most one unkillable probe however often it is checked.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    started = time.perf_counter()
    path = os.path.abspath(os.fspath(mount_path))  # string work only: no stat
    lock_path = _lock_path(path, lock_dir)
    fs_type, source = _describe_mount(path, mountinfo_path)
    # The deadline covers everything: what we spent so far, the kill grace (a child stuck in
    # the kernel uses all of it), and a little for building the answer.
    grace = min(1.0, timeout / 5)
    budget = timeout - grace - (time.perf_counter() - started) - min(0.1, timeout / 50)
    base: dict[str, Any] = {
        "mount_path": path,
        "timeout_s": timeout,
        "fs_type": fs_type,
        "mount_source": source,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }
    try:
        result = runner(
            "efsray.mount._probe:probe",
            {"mount_path": path, "lock_path": lock_path},
            timeout=max(budget, 0.01),
            kill_grace=grace,
        )
    except DeadlineExceeded:
        elapsed = _ms(started)
        logger.error("mount %s is hung: the probe did not answer within %g s", path, timeout)
        return MountHealth(
            status="hung",
            accessible=False,
            elapsed_ms=elapsed,
            error=f"no answer from {path} within {timeout:g} s: the mount is hung (a hard NFS "
            "mount whose server is unreachable blocks every operation)"
            + _stuck_note(lock_path)
            + ". Check the network path to the mount target (TCP 2049) and `efsray mounts`",
            **base,
        )
    except ChildError as exc:
        logger.error("health probe of %s failed: %s: %s", path, exc.kind, exc)
        return MountHealth(
            status="error",
            accessible=False,
            elapsed_ms=_ms(started),
            error=f"{exc.kind}: {exc}",
            **base,
        )
    except EfsrayError as exc:  # StorageError: the child could not start or died
        logger.error("health probe of %s could not run: %s", path, exc)
        return MountHealth(
            status="error", accessible=False, elapsed_ms=_ms(started), error=str(exc), **base
        )
    accessible = bool(result.get("accessible"))
    fields = {k: result.get(k) for k in _PROBE_FIELDS}
    if result.get("stale_removed"):
        logger.info("removed %d stale probe files under %s", result["stale_removed"], path)
    return MountHealth(
        status="healthy" if accessible else "error",
        accessible=accessible,
        elapsed_ms=_ms(started),
        error=None if accessible else f"read back different bytes than written under {path}",
        **fields,
        **base,
    )


_PROBE_FIELDS = (
    "write_time_ms",
    "fsync_time_ms",
    "read_time_ms",
    "delete_time_ms",
    "total_bytes",
    "free_bytes",
    "available_bytes",
    "used_percent",
    "files_free",
)


def _lock_path(path: str, lock_dir: str | os.PathLike[str] | None) -> str:
    directory = os.fspath(lock_dir) if lock_dir is not None else tempfile.gettempdir()
    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(directory, f"efsray-health-{digest}.lock")


def _stuck_note(lock_path: str) -> str:
    """Who holds the probe lock, when an earlier probe is still stuck in the kernel."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return f"; probe process {holder or '?'} is still stuck in the kernel there"
        return ""
    finally:
        os.close(fd)


def _describe_mount(
    path: str, mountinfo_path: str | os.PathLike[str]
) -> tuple[str | None, str | None]:
    try:
        mount = find_mount(read_mountinfo(mountinfo_path), path)
    except MountError as exc:
        logger.warning("cannot tell which filesystem holds %s: %s", path, exc)
        return None, None
    return (mount.fs_type, mount.source) if mount else (None, None)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
