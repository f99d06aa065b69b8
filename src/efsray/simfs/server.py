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
) -> None:
    """Mount ``config`` and serve it; return after a clean unmount.

    ``ready_fd`` (a pipe's write end) gets ``ready\\n`` once the kernel has the mount, and is
    closed; ``on_ready`` is called with the status at the same moment. Raises
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
    from efsray.simfs.ops import PassthroughOps, SimFUSE  # loads libfuse

    board = OpBoard(config.latency_profile(), seed=config.seed)
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
        mounted.set()
        log.info("mounted %s (backing %s, profile %s)", mnt, back, board.profile.name)
        if on_ready is not None:
            on_ready(status())
        if ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(ready_fd, b"ready\n")
            with contextlib.suppress(OSError):
                os.close(ready_fd)

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

    control = ControlServer(config.control_path, board, status=status, on_shutdown=stop.set)
    control.start()
    previous = _install_signal_handlers(stop)
    try:
        threading.Thread(target=stopper, name="simfs-stopper", daemon=True).start()
        fuse_thread = threading.Thread(target=run_fuse, name="simfs-fuse", daemon=True)
        fuse_thread.start()
        while not finished.wait(1.0):
            pass  # wakes up now and then so that Python's signal handlers run promptly
        fuse_thread.join()
    finally:
        _restore_signal_handlers(previous)
        control.stop()
        if ready_fd is not None and not mounted.is_set():
            with contextlib.suppress(OSError):
                os.close(ready_fd)
    if failures:
        exc = failures[0]
        raise MountError(
            f"the simulated filesystem at {mnt} failed: {exc!r}. libfuse's own message, "
            "if any, is on standard error (for a background simulator: its log file)."
        ) from exc
    log.info("unmounted %s; counters at exit: %s", mnt, board.counters()["ops"])


def _install_signal_handlers(stop: threading.Event) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    return {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}


def _restore_signal_handlers(previous: dict[int, Any]) -> None:
    for sig, old in previous.items():
        signal.signal(sig, old)
