"""Run one simulated mount in this process until it is unmounted or told to stop.

Threads: libfuse runs its multithreaded loop from a helper thread (its workers call the
Python handlers); the control socket has its own threads; the main thread only waits and
runs Python's signal handlers. Because Python has installed handlers for SIGTERM, SIGINT and
SIGHUP before libfuse starts, libfuse leaves them alone, and a signal ends the mount the same
way as the control command ``shutdown``: release every hang, unmount with fusermount3
(lazily if the mount is busy), and let the FUSE loop end on its own. The loop's worker threads
are then idle, so nothing is cancelled in the middle of Python code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from efsray.errors import MountError
from efsray.simfs.board import OpBoard
from efsray.simfs.control import ControlServer
from efsray.simfs.mounts import ensure_unmounted, fuse_unavailable_reason, is_mounted
from efsray.simfs.spec import SimFSConfig

__all__ = ["serve"]

log = logging.getLogger("efsray.simfs")

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def serve(
    config: SimFSConfig,
    *,
    ready_fd: int | None = None,
    on_ready: Callable[[dict[str, Any]], None] | None = None,
    busy_grace: float = 2.0,
) -> None:
    """Mount ``config`` and serve it; return after a clean unmount.

    ``ready_fd`` (a pipe's write end) gets ``ready\\n`` once the kernel has the mount, and is
    closed; ``on_ready`` is called with the status at the same moment. ``busy_grace``: how
    long a busy mount, detached lazily on stop, may go on serving its open files before the
    session is ended. Raises
    :class:`MountError` when FUSE is unavailable or the mount fails, :class:`ConfigError`
    for bad paths.
    """
    reason = fuse_unavailable_reason()
    if reason is not None:
        raise MountError(f"cannot start the simulated filesystem: {reason}")
    mnt, back = config.check_paths()
    if is_mounted(mnt, fstype_prefix=""):
        raise MountError(
            f"{mnt} is already a mount point; unmount it first (fusermount3 -u {mnt}) "
            "or choose another directory"
        )
    from efsray.simfs.ops import PassthroughOps, SimFUSE, caller_pid  # loads libfuse

    board = OpBoard(config.latency_profile(), seed=config.seed, caller_pid=caller_pid)
    stop = threading.Event()
    mounted = threading.Event()
    finished = threading.Event()
    failures: list[BaseException] = []

    def status() -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "mountpoint": str(mnt),
            "backing": str(back),
            "mounted": mounted.is_set() and not finished.is_set(),
            "profile": board.profile.as_dict(),
            "config": config.to_dict(),
        }

    def on_init() -> None:
        # Runs inside libfuse's INIT handler: the kernel holds every request on this mount
        # until it returns, so anything here that touched the mount would deadlock. Only
        # flag and write the pipe; the notifier thread does the rest.
        mounted.set()
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"ready\n")

    def notifier() -> None:
        while not mounted.wait(0.5):
            if finished.is_set():
                return
        log.info("mounted %s (backing %s, profile %s)", mnt, back, board.profile.name)
        if on_ready is not None:
            on_ready(status())

    ops: PassthroughOps
    if config.nfs_url is not None:
        from efsray.simfs.libnfs import NfsClient
        from efsray.simfs.nfsops import NfsOps

        try:
            client = NfsClient(config.nfs_url)
        except (OSError, ValueError) as exc:
            raise MountError(f"cannot reach the NFS server {config.nfs_url}: {exc}") from exc
        ops = NfsOps(
            client,
            board,
            attr_timeout=config.attr_timeout,
            hard_remove=config.hard_remove,
            on_init=on_init,
        )
    else:
        ops = PassthroughOps(
            str(back),
            board,
            attr_timeout=config.attr_timeout,
            hard_remove=config.hard_remove,
            on_init=on_init,
        )

    def run_fuse() -> None:
        try:
            SimFUSE(
                ops,
                str(mnt),
                foreground=True,
                fsname="efsray-simfs",
                subtype="efsray",
                default_permissions=True,
                allow_other=config.allow_other,
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which raises
            failures.append(exc)
        finally:
            finished.set()
            stop.set()

    def stopper() -> None:
        stop.wait()
        board.close()  # every hung operation goes on; nothing blocks from now on
        if finished.is_set():
            return
        log.info("unmounting %s", mnt)
        try:
            ensure_unmounted(mnt)
        except MountError as exc:
            log.error("could not unmount %s: %s", mnt, exc)
        if finished.wait(busy_grace):
            return
        # Still serving: the mount was busy (open files, a cwd inside) and was detached
        # lazily. End the session: its processes get ENOTCONN, as from a dead server.
        log.warning(
            "%s is still in use %g s after unmounting: ending the FUSE session", mnt, busy_grace
        )
        if ops.exit_session() and fuse_thread.ident is not None:
            with contextlib.suppress(ProcessLookupError, ValueError):
                signal.pthread_kill(fuse_thread.ident, signal.SIGUSR1)  # wakes the loop
        if not finished.wait(5.0):
            log.error("the FUSE loop of %s did not end; exiting the process", mnt)
            os._exit(3)

    control = ControlServer(config.control_path, board, status=status, on_shutdown=stop.set)
    control.start()
    fuse_thread = threading.Thread(target=run_fuse, name="simfs-fuse", daemon=True)
    previous = _install_signal_handlers(stop)
    try:
        threading.Thread(target=stopper, name="simfs-stopper", daemon=True).start()
        threading.Thread(target=notifier, name="simfs-notifier", daemon=True).start()
        fuse_thread.start()
        while not finished.wait(1.0):
            pass  # wakes up now and then so that Python's signal handlers run promptly
        fuse_thread.join()
    finally:
        _restore_signal_handlers(previous)
        control.stop()
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.close(ready_fd)
    if failures:
        failure = failures[0]
        raise MountError(
            f"the simulated filesystem at {mnt} failed: {failure!r}. libfuse's own message, "
            "if any, is on standard error (for a background simulator: its log file)."
        ) from failure
    log.info("unmounted %s; counters at exit: %s", mnt, board.counters()["ops"])


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous: dict[int, Any] = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    # SIGUSR1 only interrupts the FUSE loop's wait (see stopper); the handler does nothing.
    previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda _s, _f: None)
    return previous


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
