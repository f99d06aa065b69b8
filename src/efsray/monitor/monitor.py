"""``EFSPerformanceMonitor``: probe every mount under a deadline, read NFS counters, judge.

Each probe runs in a child process (:func:`efsray.deadline.run_in_child`), so a hung mount
costs the monitor one killed child and a "hung" verdict, never a blocked thread or event loop.
The async methods run the blocking waits in worker threads (``asyncio.to_thread``), all
mounts at once, so one slow mount does not delay the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno as errno_mod
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efsray.deadline import ChildError, run_in_child
from efsray.errors import DeadlineExceeded, StorageError
from efsray.monitor.metrics import EFSPerformanceMetrics, MountReport, metrics_from_probe
from efsray.monitor.mountstats import MountStats, mount_for_path, op_intervals, read_mountstats
from efsray.monitor.probes import ProbeConfig
from efsray.monitor.status import Status, Thresholds, evaluate

if TYPE_CHECKING:
    from efsray.config import Settings

__all__ = ["PROBE_TARGET", "EFSPerformanceMonitor"]

logger = logging.getLogger("efsray.monitor")

PROBE_TARGET = "efsray.monitor.probes:run_probe"
CLEANUP_TARGET = "efsray.monitor.probes:cleanup_stale_probes"
_MARK = "EFSRAY_PROBE_MOUNT"  # in the probe child's environment: which mount it probes

Runner = Callable[..., Any]


class EFSPerformanceMonitor:
    """Monitor EFS performance for Ray workers (the seed's class, made safe on hung mounts).

    ``mount_paths`` are the directories to probe (each needs a few MiB of free space and write
    permission). ``timeout`` is the deadline of one probe in seconds: past it the mount is
    reported ``hung``. ``mountstats_path`` is read for NFS mounts (None: never).
    """

    def __init__(
        self,
        mount_paths: Sequence[str | os.PathLike[str]],
        *,
        config: ProbeConfig | None = None,
        thresholds: Thresholds | None = None,
        timeout: float = 20.0,
        mountstats_path: str | os.PathLike[str] | None = "/proc/self/mountstats",
        runner: Runner = run_in_child,
    ) -> None:
        if isinstance(mount_paths, str | os.PathLike):
            raise TypeError(
                "mount_paths is a list of paths; wrap a single path: "
                f"EFSPerformanceMonitor([{os.fspath(mount_paths)!r}])"
            )
        if not mount_paths:
            raise ValueError("mount_paths is empty; give at least one directory to monitor")
        if timeout <= 0:
            raise ValueError(f"timeout={timeout!r} must be > 0 seconds")
        # Lexical absolute paths: resolving symlinks would stat a possibly hung mount.
        self.mount_paths: list[str] = [
            os.path.normpath(os.path.abspath(os.fspath(p))) for p in mount_paths
        ]
        self.config = config or ProbeConfig()
        self.thresholds = thresholds or Thresholds()
        self.timeout = timeout
        self.mountstats_path = mountstats_path
        self.logger = logging.getLogger("efsray.monitor.EFSPerformanceMonitor")
        self._runner = runner
        self._lock = threading.Lock()
        self._previous_nfs: dict[str, MountStats] = {}
        self._active: dict[str, int] = {}
        self._closing = threading.Event()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        mount_paths: Sequence[str | os.PathLike[str]] | None = None,
        **kwargs: Any,
    ) -> EFSPerformanceMonitor:
        """A monitor configured by EFSRAY_MONITOR_* settings (paths: given, else settings)."""
        config = ProbeConfig(
            latency_samples=settings.efsray_monitor_latency_samples,
            metadata_files=settings.efsray_monitor_metadata_files,
            throughput_bytes=settings.efsray_monitor_throughput_bytes,
            block_bytes=settings.efsray_monitor_block_bytes,
            stale_after=settings.efsray_monitor_stale_probe_seconds,
        )
        paths = list(mount_paths) if mount_paths else list(settings.monitor_mount_paths)
        kwargs.setdefault("config", config)
        kwargs.setdefault("thresholds", Thresholds.from_settings(settings))
        kwargs.setdefault("timeout", settings.efsray_monitor_probe_timeout)
        return cls(paths, **kwargs)

    # --- the seed's API ------------------------------------------------------------------

    async def collect_efs_metrics(self) -> list[EFSPerformanceMetrics]:
        """Collect performance metrics for all EFS mount points (the seed's method).

        Like the seed, a mount whose probe fails is logged (with the cause) and left out;
        :meth:`collect` returns every mount with its status instead.
        """
        metrics = []
        for report in await self.collect():
            if report.metrics is None:
                self.logger.error(
                    "Failed to collect metrics for %s: %s (%s)",
                    report.mount_path,
                    report.error,
                    report.status.value,
                )
                continue
            metrics.append(report.metrics)
        return metrics

    # --- the full API --------------------------------------------------------------------

    async def collect(self) -> list[MountReport]:
        """Probe every mount concurrently; one :class:`MountReport` per mount, in order."""
        return list(
            await asyncio.gather(*(asyncio.to_thread(self.probe, p) for p in self.mount_paths))
        )

    def probe(self, mount_path: str | os.PathLike[str]) -> MountReport:
        """Probe one mount, blocking the calling thread for at most ``timeout`` + ~1 s."""
        path = os.path.normpath(os.path.abspath(os.fspath(mount_path)))
        started = time.monotonic()
        timestamp = dt.datetime.now(dt.UTC)
        nfs, interval, since_mount = self._read_nfs(path)

        def report(status: Status, reasons: tuple[str, ...], **kw: Any) -> MountReport:
            return MountReport(
                mount_path=path,
                status=status,
                timestamp=timestamp,
                reasons=reasons,
                nfs=nfs,
                nfs_interval=interval,
                nfs_since_mount=since_mount,
                collection_seconds=time.monotonic() - started,
                **kw,
            )

        with self._lock:
            concurrent = self._active.get(path, 0) > 0
            self._active[path] = self._active.get(path, 0) + 1
        try:
            stuck = None if concurrent else _stuck_probe_age(path)
            if stuck is None:
                return self._probe_child(path, since_mount, interval, report)
        finally:
            with self._lock:
                self._active[path] -= 1
        msg = (
            f"a probe of {path} started {stuck:.0f} s ago is still blocked in the kernel; "
            "the mount is hung (check the NFS server / network, `efsray health`)"
        )
        return report(Status.HUNG, (msg,), error=msg)

    def _probe_child(
        self,
        path: str,
        since_mount: bool,
        interval: dict[str, Any],
        report: Callable[..., MountReport],
    ) -> MountReport:
        if self._closing.is_set():
            msg = "the monitor is shutting down; probe not started"
            return report(Status.FAILING, (msg,), error=msg)
        payload = {"path": path, **self.config.to_payload()}
        try:
            result = self._runner(
                PROBE_TARGET, payload, timeout=self.timeout, env={**os.environ, _MARK: path}
            )
        except DeadlineExceeded as exc:
            self.logger.warning("probe of %s hung: %s", path, exc)
            return report(
                Status.HUNG, (f"probe did not finish within {self.timeout:g} s",), error=str(exc)
            )
        except ChildError as exc:
            msg = _describe_child_error(path, exc)
            self.logger.warning("%s", msg)
            return report(Status.FAILING, (msg,), error=msg)
        except StorageError as exc:
            self.logger.warning("probe of %s failed: %s", path, exc)
            return report(Status.FAILING, (str(exc),), error=str(exc))
        metrics, samples = metrics_from_probe(path, result, dt.datetime.now(dt.UTC))
        status, reasons = evaluate(metrics, self.thresholds, None if since_mount else interval)
        return report(status, reasons, metrics=metrics, samples=samples)

    def cancel_probes(self) -> int:
        """Kill this process's running probe children and start no new ones; return how many.

        For shutdown. Each child leads its own process group, which is killed whole. Their
        probe directories are removed by :meth:`cleanup` or by the next probe.
        """
        self._closing.set()
        killed = 0
        for pid, _, _ in _probe_children():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
                killed += 1
        return killed

    def cleanup(self, timeout: float = 5.0) -> int:
        """Remove probe directories left by killed probes of this host; return how many.

        Runs in a child under ``timeout`` per mount, so a hung mount cannot block shutdown.
        """
        removed = 0
        for path in self.mount_paths:
            try:
                removed += int(
                    self._runner(
                        CLEANUP_TARGET,
                        {"path": path, "stale_after": self.config.stale_after},
                        timeout=timeout,
                    )
                )
            except (DeadlineExceeded, ChildError, StorageError) as exc:
                self.logger.warning("could not clean up probe files in %s: %s", path, exc)
        return removed

    def _read_nfs(self, path: str) -> tuple[MountStats | None, dict[str, Any], bool]:
        if self.mountstats_path is None:
            return None, {}, False
        try:
            mounts = read_mountstats(self.mountstats_path)
        except OSError as exc:
            self.logger.warning(
                "cannot read %s (%s): no NFS counters or retransmission checks for %s",
                self.mountstats_path,
                exc,
                path,
            )
            return None, {}, False
        mount = mount_for_path(mounts, path)
        if mount is None or not mount.is_nfs:
            return None, {}, False
        with self._lock:
            previous = self._previous_nfs.get(path)
            self._previous_nfs[path] = mount
        interval, since_mount = op_intervals(previous, mount)
        return mount, interval, since_mount


def _describe_child_error(path: str, exc: ChildError) -> str:
    code = exc.errno
    name = errno_mod.errorcode.get(code, str(code)) if isinstance(code, int) else None
    hint = ""
    if code in (errno_mod.EACCES, errno_mod.EPERM, errno_mod.EROFS):
        hint = "; the monitor needs write access to the mount to probe it"
    elif code in (errno_mod.ENOSPC, errno_mod.EDQUOT):
        hint = "; the volume or quota is full"
    elif code == errno_mod.ENOENT:
        hint = "; is the path right and the file system mounted?"
    return f"probe of {path} failed: {exc.kind}{f' [{name}]' if name else ''}: {exc}{hint}"


def _probe_children() -> list[tuple[int, str, float]]:
    """(pid, mount path, age in seconds) of every live probe child of this process."""
    me = os.getpid()
    proc = Path("/proc")
    found: list[tuple[int, str, float]] = []
    try:
        pids = [int(e) for e in os.listdir(proc) if e.isdigit()]
        uptime = float((proc / "uptime").read_text().split()[0])
    except OSError:
        return found
    ticks = os.sysconf("SC_CLK_TCK")
    prefix = f"{_MARK}=".encode()
    for pid in pids:
        # A child can exit between listing and reading: skip it.
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (proc / str(pid) / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) != me:  # field 4 of /proc/PID/stat: the parent pid
                continue
            environ = (proc / str(pid) / "environ").read_bytes().split(b"\0")
            marks = [v[len(prefix) :] for v in environ if v.startswith(prefix)]
            if not marks:
                continue
            age = max(0.0, uptime - int(fields[19]) / ticks)  # field 22: start time
            found.append((pid, os.fsdecode(marks[0]), age))
    return found


def _stuck_probe_age(path: str) -> float | None:
    """Seconds since a still-running probe child of ours for ``path`` started, else None.

    A probe killed at its deadline while in an uninterruptible wait lingers until the
    kernel call returns; starting another would pile up stuck processes on a dead mount.
    """
    ages = [age for _, mount, age in _probe_children() if mount == path]
    return max(ages) if ages else None
