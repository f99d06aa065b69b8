"""Start a simulator in a background process, wait until it is mounted, and stop it.

The simulator never runs inside the process that uses the mount: a process that serves its
own FUSE mount from Python threads deadlocks easily (a fork, the GIL, a hang), and tests kill
writers with SIGKILL. :class:`SimFSProcess` is a context manager; leaving it always unmounts:
shutdown over the control socket, then SIGTERM, then SIGKILL (which aborts the FUSE
connection) and a lazy fusermount3 as the last resort.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from efsray.errors import MountError
from efsray.simfs.control import SimFSControl, check_socket_path
from efsray.simfs.mounts import ensure_unmounted, fuse_unavailable_reason, is_mounted
from efsray.simfs.spec import SimFSConfig, default_control_path

__all__ = ["SimFSProcess"]

log = logging.getLogger("efsray.simfs")


class SimFSProcess:
    """A simulator running in a child process (see :meth:`start`)."""

    def __init__(
        self,
        config: SimFSConfig,
        popen: subprocess.Popen[bytes] | None,
        pid: int,
        log_path: Path,
    ) -> None:
        self.config = config
        self.pid = pid
        self.log_path = log_path
        self.control = SimFSControl(config.control_path)
        self._popen = popen
        self._stopped = False

    @property
    def path(self) -> Path:
        """The mount point (where applications read and write)."""
        return Path(os.path.abspath(self.config.mountpoint))

    @property
    def backing(self) -> Path:
        """The backing directory (the "server's" disk: not counted, never faulty)."""
        return Path(os.path.abspath(self.config.backing))

    def __repr__(self) -> str:
        return f"SimFSProcess(pid={self.pid}, path={str(self.path)!r})"

    @classmethod
    def start(
        cls,
        config: SimFSConfig,
        *,
        timeout: float = 30.0,
        log_path: Path | None = None,
        detach: bool = False,
    ) -> SimFSProcess:
        """Start ``python -m efsray.simfs`` for ``config`` and wait until the mount is up.

        ``detach``: the child survives this process (its own session; used by
        ``efsray simulate --background``). Raises :class:`MountError` with the child's log
        when it fails or is not mounted within ``timeout`` seconds.
        """
        reason = fuse_unavailable_reason()
        if reason is not None:
            raise MountError(f"cannot start the simulated filesystem: {reason}")
        # The real paths, for the mount table; the control socket keeps the caller's spelling.
        real_mnt, real_back = config.check_paths()
        control_path = check_socket_path(config.control_path)
        config = dataclasses.replace(
            config, mountpoint=real_mnt, backing=real_back, control=control_path
        )
        if log_path is None:
            log_path = control_path.with_suffix(".log")
        log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        read_end, write_end = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in [_package_parent(), env.get("PYTHONPATH", "")] if p
        )
        command = [
            sys.executable,
            "-m",
            "efsray.simfs",
            "--config",
            json.dumps(config.to_dict()),
            "--ready-fd",
            str(write_end),
        ]
        try:
            with open(log_path, "wb") as log_file:
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    pass_fds=(write_end,),
                    start_new_session=True,
                    env=env,
                    close_fds=True,
                )
        except OSError as exc:
            os.close(read_end)
            raise MountError(f"could not start the simulator: {exc}") from exc
        finally:
            os.close(write_end)
        handle = cls(config, None if detach else popen, popen.pid, log_path)
        try:
            ready = _wait_ready(read_end, timeout)
        finally:
            os.close(read_end)
        if not ready or not is_mounted(handle.path):
            returncode = popen.poll()
            handle._popen = popen
            with contextlib.suppress(MountError):
                handle.stop(timeout=5.0)
            what = (
                f"exited with status {returncode}"
                if returncode is not None
                else f"was not mounted within {timeout:g} s"
            )
            raise MountError(
                f"the simulator for {handle.path} {what}. Its log ({log_path}):\n" + _tail(log_path)
            )
        log.info("simfs pid %d mounted %s", handle.pid, handle.path)
        return handle

    @classmethod
    def attach(
        cls, mountpoint: str | os.PathLike[str], *, control: str | os.PathLike[str] | None = None
    ) -> SimFSProcess:
        """A handle on a simulator started elsewhere (``efsray simulate --background``)."""
        path = Path(control) if control is not None else default_control_path(mountpoint)
        status = SimFSControl(path).status()
        config = SimFSConfig.from_dict({**status["config"], "control": str(path)})
        return cls(config, None, int(status["pid"]), path.with_suffix(".log"))

    def alive(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _is_zombie(self.pid)

    def stop(self, *, timeout: float = 15.0) -> None:
        """Release hangs, unmount and end the simulator. Idempotent; never leaves a mount.

        Raises :class:`MountError` only when the mount point is still mounted at the end.
        """
        if self._stopped:
            return
        if self.alive():
            try:
                self.control.request("shutdown", timeout=5.0)
            except MountError as exc:
                log.warning("simfs pid %d did not take the shutdown command: %s", self.pid, exc)
            if not self._wait_exit(timeout):
                log.warning("simfs pid %d still running after %g s: SIGTERM", self.pid, timeout)
                self._signal(signal.SIGTERM)
                if not self._wait_exit(5.0):
                    log.warning("simfs pid %d ignores SIGTERM: SIGKILL", self.pid)
                    self._signal(signal.SIGKILL)
                    self._wait_exit(10.0)
        # A killed simulator leaves a dead mount ("transport endpoint is not connected").
        ensure_unmounted(self.path)
        self._stopped = True
        if is_mounted(self.path):
            raise MountError(
                f"{self.path} is still mounted after stopping simfs pid {self.pid}; "
                f"run: fusermount3 -uz {self.path}"
            )

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the simulator to exit; its exit status if it is our
        child and has exited, else ``None``."""
        if not self._wait_exit(timeout):
            return None
        return None if self._popen is None else self._popen.returncode

    def kill(self) -> None:
        """SIGKILL the simulator, as a crashed server: the mount fails with ENOTCONN."""
        self._signal(signal.SIGKILL)
        self._wait_exit(10.0)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def _wait_exit(self, timeout: float) -> bool:
        if self._popen is not None:
            try:
                self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        return _wait_pid_gone(self.pid, timeout)

    def __enter__(self) -> SimFSProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wait_ready(fd: int, timeout: float) -> bool:
    """Wait for ``ready`` on the pipe: True when it came, False on EOF (the child died) or
    when ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    buffer = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return False
        chunk = os.read(fd, 64)
        if not chunk:
            return False
        buffer += chunk
        if b"ready" in buffer:
            return True


def _wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to disappear (pidfd when available)."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except OSError:
        pidfd = -1
    if pidfd >= 0:
        try:
            readable, _, _ = select.select([pidfd], [], [], timeout)
            return bool(readable)
        finally:
            os.close(pidfd)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(could not read the log: {exc})"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(empty)"
