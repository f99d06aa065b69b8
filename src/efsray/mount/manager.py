"""``EFSMountManager``: mount, unmount, inspect and health-check one EFS mount.

Two faces over one engine. The seed's methods keep the seed's return shapes
(``validate_efs_availability()``, ``create_mount_point()`` and ``mount_efs()`` answer
``True``/``False``, ``check_mount_health()`` a dict); every ``False`` is logged with its cause
on the ``efsray.mount`` logger and kept in :attr:`EFSMountManager.last_error`. The engine's
methods (``check_availability()``, ``mount()``, ``unmount()``, ``live_options()``,
``health()``) return value objects and raise :class:`~efsray.errors.MountError` with the
reason; the CLI uses those.

Nothing here can hang: mount(8) and umount(8) run under a deadline in their own process group
(retried with exponential backoff), DNS resolution has a deadline, the mount table is read from
``/proc/self/mountinfo`` (which never touches the mount), and the health probe runs in a
child process that is killed at its deadline.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import tenacity

from efsray.errors import DeadlineExceeded, EfsrayError, MountError
from efsray.mount._proc import run_bounded
from efsray.mount.availability import Availability, Resolver, check_availability
from efsray.mount.config import EFSMountConfig
from efsray.mount.drift import DriftReport, option_drift
from efsray.mount.health import MountHealth, check_health
from efsray.mount.mountinfo import MOUNTINFO, MountInfo, mount_at, read_mountinfo
from efsray.mount.options import NFS_PORT

__all__ = ["EFSMountManager", "LiveMount", "MountResult", "unmount_path"]

logger = logging.getLogger("efsray.mount")

# mount(8) exit status 1 is "incorrect invocation or permissions": retrying cannot help.
_NO_RETRY_CODES = frozenset({1})
_NO_RETRY_TEXT = ("unknown filesystem type", "only root", "permission denied", "bad option")


@dataclass(frozen=True, slots=True)
class MountResult:
    """What :meth:`EFSMountManager.mount` did."""

    mount_path: str
    argv: tuple[str, ...]
    command: str
    attempts: int
    already_mounted: bool
    elapsed_s: float
    mount: MountInfo | None
    drift: DriftReport | None


@dataclass(frozen=True, slots=True)
class LiveMount:
    """The filesystem mounted at a path, its live options, and their drift from ours."""

    mount: MountInfo
    options: tuple[str, ...]
    drift: DriftReport


class EFSMountManager:
    """Manage one EFS mount (``mount_config``), as the seed's ``EFSMountManager`` did.

    Keyword-only arguments, durations in float seconds: ``mount_timeout`` per mount(8) run,
    ``attempts`` runs at most, waiting ``backoff`` x 2^n (at most ``max_backoff``) between
    them; ``dns_timeout`` for resolution; ``check_port`` also opens a TCP connection to
    ``nfs_port`` before mounting; ``health_timeout`` bounds :meth:`check_mount_health`.
    ``mountinfo_path``, ``mount_binary``/``umount_binary``, ``resolver`` and ``sleep`` are the
    collaborators (tests and containers pass their own).
    """

    def __init__(
        self,
        mount_config: EFSMountConfig,
        *,
        mount_timeout: float = 30.0,
        attempts: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 15.0,
        dns_timeout: float = 5.0,
        check_port: bool = False,
        nfs_port: int = NFS_PORT,
        connect_timeout: float = 3.0,
        health_timeout: float = 5.0,
        mountinfo_path: str | os.PathLike[str] = MOUNTINFO,
        mount_binary: str = "mount",
        umount_binary: str = "umount",
        resolver: Resolver = socket.getaddrinfo,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, value in (
            ("mount_timeout", mount_timeout),
            ("dns_timeout", dns_timeout),
            ("connect_timeout", connect_timeout),
            ("health_timeout", health_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts!r}")
        if backoff < 0 or max_backoff < 0:
            raise ValueError(f"backoff and max_backoff must be >= 0, got {backoff}, {max_backoff}")
        self.config = mount_config
        self.logger = logger
        self.mount_timeout = mount_timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.dns_timeout = dns_timeout
        self.check_port = check_port
        self.nfs_port = nfs_port
        self.connect_timeout = connect_timeout
        self.health_timeout = health_timeout
        self.mountinfo_path = mountinfo_path
        self.mount_binary = mount_binary
        self.umount_binary = umount_binary
        self._resolver = resolver
        self._sleep = sleep
        self.last_error: EfsrayError | None = None
        """Why the last seed-style method returned False (None after a success)."""

    def __repr__(self) -> str:
        return f"EFSMountManager({self.config.device!r} -> {self.config.mount_path!r})"

    # --- the seed's API ---------------------------------------------------------------

    def validate_efs_availability(self) -> bool:
        """True when the file system's name resolves (and, with ``check_port``, NFS answers).
        A mount target IP needs no DNS. On False the cause is logged and in ``last_error``."""
        report = self.check_availability()
        if report.ok:
            self.last_error = None
            return True
        self._failed(MountError(report.error or "unavailable"))
        return False

    def create_mount_point(self) -> bool:
        """Create the mount point directory (mode 0755) if missing. False (logged) on failure."""
        try:
            self._make_mount_point()
        except MountError as exc:
            self._failed(exc)
            return False
        self.last_error = None
        return True

    def mount_efs(self) -> bool:
        """Mount the file system (see :meth:`mount`). False (logged, ``last_error``) on failure."""
        try:
            self.mount()
        except MountError as exc:
            self._failed(exc)
            return False
        self.last_error = None
        return True

    def check_mount_health(self) -> dict[str, Any]:
        """The seed's health dict (status, write_time_ms, read_time_ms, mount_path,
        accessible; ``error`` on failure) plus fsync time, space and more. Status is
        "healthy", "hung" or "error"; answers within ``health_timeout`` seconds."""
        return self.health().as_dict()

    # --- the engine ---------------------------------------------------------------------

    def check_availability(self, *, check_port: bool | None = None) -> Availability:
        """Resolve the server (skipped for an IP) and optionally connect to NFS. Never raises."""
        port = self.nfs_port if (self.check_port if check_port is None else check_port) else None
        host = self.config.server
        if _is_ip(host) and port is None:
            return Availability(host, (host,), 0.0, None, None, None, None)
        return check_availability(
            host,
            dns_timeout=self.dns_timeout,
            port=port,
            connect_timeout=self.connect_timeout,
            resolver=self._resolver,
        )

    def is_mounted(self) -> bool:
        """True when a filesystem is mounted exactly at the mount path (per mountinfo)."""
        return self._mounted() is not None

    def live_options(self) -> LiveMount:
        """The live options of the mount at the mount path and their drift from this config's
        options. Raises :class:`MountError` when nothing is mounted there."""
        mount = self._mounted()
        if mount is None:
            raise MountError(
                f"nothing is mounted at {self.config.mount_path}; mount it first "
                "(efsray mount) or check EFS_MOUNT_PATH"
            )
        return LiveMount(mount, mount.options, self._drift(mount))

    def mount(self) -> MountResult:
        """Mount the file system, retrying with backoff; never blocks past the deadlines.

        Already mounted with matching options is success (``already_mounted=True``); mounted
        with other options or another file system is a :class:`MountError` that says so.
        """
        started = time.monotonic()
        cfg = self.config
        argv = tuple(cfg.mount_argv(self.mount_binary))
        command = cfg.mount_command(self.mount_binary)
        existing = self._mounted()
        if existing is not None:
            drift = self._check_existing(existing)
            self.logger.info("%s is already mounted at %s", existing.source, cfg.mount_path)
            return MountResult(
                cfg.mount_path, argv, command, 0, True, time.monotonic() - started, existing, drift
            )
        report = self.check_availability()  # no DNS lookup for a mount target IP
        if not report.ok:
            raise MountError(f"not mounting {cfg.device}: {report.error}")
        self._make_mount_point()
        self.logger.info("mounting: %s", command)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff, max=self.max_backoff),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, _Retryable)),
            sleep=self._sleep,
            before_sleep=self._log_retry,
            reraise=True,
        )
        attempt = 0
        try:
            for try_ in retrying:
                with try_:
                    attempt = try_.retry_state.attempt_number
                    failure, retry = self._run_mount(argv, attempt)
                    if failure:
                        raise (_Retryable if retry else _Final)(failure)
        except (_Retryable, _Final) as exc:
            raise MountError(
                f"mounting {cfg.device} on {cfg.mount_path} failed after {attempt} "
                f"attempt(s): {exc}. Command: {command}{_hint(str(exc))}"
            ) from None
        mounted = self._mounted()
        if mounted is None:
            raise MountError(
                f"{self.mount_binary} exited 0 but nothing is mounted at {cfg.mount_path} "
                f"according to {os.fspath(self.mountinfo_path)}; is mount running in another "
                "mount namespace (a container without propagation)?"
            )
        drift = self._drift(mounted)
        if not drift.ok:
            self.logger.warning(
                "mounted %s at %s, but its options differ: %s",
                cfg.device,
                cfg.mount_path,
                drift.summary(),
            )
        self.logger.info("mounted %s at %s (attempt %d)", cfg.device, cfg.mount_path, attempt)
        return MountResult(
            cfg.mount_path,
            argv,
            command,
            attempt,
            False,
            time.monotonic() - started,
            mounted,
            drift,
        )

    def unmount(self, *, lazy: bool = True) -> bool:
        """Unmount the mount path; see :func:`unmount_path`."""
        return unmount_path(
            self.config.mount_path,
            lazy=lazy,
            timeout=self.mount_timeout,
            umount_binary=self.umount_binary,
            mountinfo_path=self.mountinfo_path,
        )

    def health(self, *, timeout: float | None = None) -> MountHealth:
        """Probe the mount in a child process; see :func:`efsray.mount.health.check_health`."""
        return check_health(
            self.config.mount_path,
            timeout=self.health_timeout if timeout is None else timeout,
            mountinfo_path=self.mountinfo_path,
        )

    # --- helpers ------------------------------------------------------------------------

    def _failed(self, exc: EfsrayError) -> None:
        self.last_error = exc
        self.logger.error("%s", exc)

    def _mounted(self) -> MountInfo | None:
        return mount_at(read_mountinfo(self.mountinfo_path), self.config.mount_path)

    def _drift(self, mount: MountInfo) -> DriftReport:
        return option_drift(
            mount.options, self.config.get_mount_options(), mount_point=mount.mount_point
        )

    def _check_existing(self, mount: MountInfo) -> DriftReport:
        cfg = self.config
        if not mount.is_nfs:
            raise MountError(
                f"{cfg.mount_path} already has a {mount.fs_type} filesystem ({mount.source}) "
                "mounted, not NFS; unmount it or choose another EFS_MOUNT_PATH"
            )
        expected_hosts = {cfg.server, cfg.efs_dns_name, cfg.file_system_id, "127.0.0.1"}
        if mount.server not in expected_hosts or mount.export != cfg.export_path:
            raise MountError(
                f"{cfg.mount_path} already has {mount.source} mounted, not {cfg.device}; "
                "unmount it first (efsray unmount)"
            )
        drift = self._drift(mount)
        if not drift.matches:
            raise MountError(
                f"{cfg.device} is already mounted at {cfg.mount_path} with other options "
                f"({drift.summary()}); unmount it (efsray unmount) and mount again"
            )
        return drift

    def _make_mount_point(self) -> None:
        path = self.config.mount_path
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise MountError(
                f"cannot create mount point {path}: {exc.strerror or exc}; create it as root "
                "or choose another EFS_MOUNT_PATH"
            ) from exc

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        self.logger.warning(
            "mount attempt %d/%d failed (%s); retrying in %.1f s",
            state.attempt_number,
            self.attempts,
            state.outcome.exception() if state.outcome else "?",
            state.upcoming_sleep,
        )

    def _run_mount(self, argv: tuple[str, ...], attempt: int) -> tuple[str, bool]:
        """One mount(8) run: ('', _) on success, else (reason, retry?)."""
        try:
            proc = run_bounded(argv, timeout=self.mount_timeout)
        except DeadlineExceeded as exc:
            return str(exc), True
        except FileNotFoundError:
            raise MountError(
                f"{argv[0]!r} not found on PATH; install util-linux and nfs-common "
                "(amazon-efs-utils for mount_type efs)"
            ) from None
        except OSError as exc:
            raise MountError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        if proc.returncode == 0:
            return "", False
        text = (proc.stderr or proc.stdout or "").strip() or "no error message"
        reason = f"exit status {proc.returncode}: {text}"
        retry = proc.returncode not in _NO_RETRY_CODES and not any(
            t in text.lower() for t in _NO_RETRY_TEXT
        )
        self.logger.debug("mount attempt %d: %s (retry=%s)", attempt, reason, retry)
        return reason, retry


def unmount_path(
    path: str | os.PathLike[str],
    *,
    lazy: bool = True,
    timeout: float = 30.0,
    umount_binary: str = "umount",
    mountinfo_path: str | os.PathLike[str] = MOUNTINFO,
) -> bool:
    """Unmount ``path``. True when something was unmounted, False (logged) when nothing was
    mounted there. When the mount is busy or umount(8) does not finish within ``timeout``,
    and ``lazy``, detach it lazily (``umount -l``: it goes away once no longer used).
    Raises :class:`MountError` when it cannot be unmounted."""
    target = os.path.abspath(os.fspath(path))  # string work only: no stat
    if mount_at(read_mountinfo(mountinfo_path), target) is None:
        logger.info("unmount: nothing is mounted at %s", target)
        return False
    failure = _run_umount([umount_binary, target], timeout)
    if failure and lazy and ("busy" in failure.lower() or "did not finish" in failure):
        logger.warning("unmount of %s failed (%s); detaching lazily", target, failure)
        failure = _run_umount([umount_binary, "-l", target], timeout)
    if failure:
        advice = (
            "check `efsray mounts`; a hung NFS mount may need `umount -f -l`"
            if lazy
            else "stop the processes using it (fuser -vm PATH) or allow a lazy unmount"
        )
        raise MountError(f"cannot unmount {target}: {failure}; {advice}")
    if mount_at(read_mountinfo(mountinfo_path), target) is not None:
        raise MountError(
            f"{umount_binary} exited 0 but {target} is still mounted (stacked mounts?); "
            "run `efsray unmount` again"
        )
    logger.info("unmounted %s", target)
    return True


def _run_umount(argv: list[str], timeout: float) -> str:
    """One umount(8) run: '' on success, else the reason."""
    logger.info("unmounting: %s", shlex.join(argv))
    try:
        proc = run_bounded(argv, timeout=timeout)
    except DeadlineExceeded as exc:
        return str(exc)
    except FileNotFoundError:
        raise MountError(f"{argv[0]!r} not found on PATH; install util-linux") from None
    except OSError as exc:
        raise MountError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
    if proc.returncode == 0:
        return ""
    text = (proc.stderr or proc.stdout or "").strip() or "no error message"
    return f"exit status {proc.returncode}: {text}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _hint(failure: str) -> str:
    text = failure.lower()
    if "unknown filesystem type 'efs'" in text or "unknown filesystem type" in text:
        return ". Install amazon-efs-utils (mount -t efs) or nfs-common (mount -t nfs4)"
    if "only root" in text or "permission denied" in text or "operation not permitted" in text:
        return (
            ". Mounting needs root (CAP_SYS_ADMIN); in a container run privileged or with "
            "cap_add: [SYS_ADMIN], or let Docker mount the volume (compose driver_opts)"
        )
    if "access denied" in text:
        return ". The server refused the export: check the export path, access point and IAM"
    if "timed out" in text or "did not finish" in text or "no route" in text:
        return (
            ". The mount target did not answer: its security group must allow TCP 2049 from "
            "this host, and the host needs a mount target in its availability zone"
        )
    return ""


class _Retryable(Exception):
    """A mount(8) failure that another attempt may not meet (a timeout, a busy server)."""


class _Final(Exception):
    """A mount(8) failure that retrying cannot help (bad options, permissions)."""
