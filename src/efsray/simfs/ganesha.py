"""A real NFSv4 server for tests: nfs-ganesha (FSAL VFS) on 127.0.0.1, a free high port.

``GaneshaServer.start(export_dir, state_dir)`` writes an NFSv4-only configuration (no NLM, no
RQUOTA, no rpcbind registration needed, no grace period), starts ``ganesha.nfsd`` in the
foreground as a child process with its log, pid file and recovery directory under
``state_dir``, and waits until the port accepts connections. ``stop()`` ends it by pid
(SIGTERM, then SIGKILL). The export is reachable as ``nfs://127.0.0.1/export?version=4&nfsport=
PORT`` (:attr:`GaneshaServer.url`) with libnfs clients.

Privileges: ganesha's VFS backend opens files by handle (``open_by_handle_at``), which needs
CAP_DAC_READ_SEARCH, so the server must run as root (or with that capability). Everything
else is unprivileged: a port above 1024 on the loopback interface only, no rpcbind, no D-Bus
(ganesha logs that D-Bus is missing and goes on), no files outside ``state_dir``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from efsray.errors import MountError

__all__ = ["GaneshaServer", "ganesha_unavailable_reason"]

_FSAL_VFS = (
    "/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so",
    "/usr/lib/aarch64-linux-gnu/ganesha/libfsalvfs.so",
    "/usr/lib64/ganesha/libfsalvfs.so",
    "/usr/lib/ganesha/libfsalvfs.so",
)

_CONFIG = """\
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {port};
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = "{recovery}";
    Allow_Numeric_Owners = true;
    Only_Numeric_Owners = true;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = "{export}";
    Pseudo = /export;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 4;
    Transports = TCP;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = EVENT; }}
"""


def ganesha_unavailable_reason() -> str | None:
    """Why nfs-ganesha cannot run here, or ``None``."""
    if shutil.which("ganesha.nfsd") is None:
        return "ganesha.nfsd is not installed: apt-get install nfs-ganesha nfs-ganesha-vfs"
    if not any(os.path.exists(p) for p in _FSAL_VFS):
        return "ganesha's VFS backend is not installed: apt-get install nfs-ganesha-vfs"
    if os.geteuid() != 0:
        return (
            "nfs-ganesha's VFS backend needs root (CAP_DAC_READ_SEARCH for open_by_handle_at); "
            f"this is uid {os.geteuid()}"
        )
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GaneshaServer:
    """One ganesha.nfsd child exporting one directory over NFSv4 on 127.0.0.1."""

    def __init__(self, export_dir: Path, state_dir: Path, port: int, proc: subprocess.Popen[bytes]):
        self.export_dir = export_dir
        self.state_dir = state_dir
        self.port = port
        self._proc = proc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def url(self) -> str:
        """The export as a libnfs URL (NFSv4, explicit port: no rpcbind involved)."""
        return f"nfs://127.0.0.1/export?version=4&nfsport={self.port}"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "ganesha.log"

    def __repr__(self) -> str:
        return f"GaneshaServer(pid={self.pid}, port={self.port}, export={str(self.export_dir)!r})"

    @classmethod
    def start(cls, export_dir: Path, state_dir: Path, *, timeout: float = 30.0) -> GaneshaServer:
        reason = ganesha_unavailable_reason()
        if reason is not None:
            raise MountError(f"cannot start nfs-ganesha: {reason}")
        export_dir = Path(os.path.realpath(export_dir))
        state_dir = Path(os.path.realpath(state_dir))
        recovery = state_dir / "recovery"
        recovery.mkdir(parents=True, exist_ok=True)
        port = _free_port()
        config = state_dir / "ganesha.conf"
        config.write_text(_CONFIG.format(port=port, recovery=recovery, export=export_dir))
        log_path = state_dir / "ganesha.log"
        command = [
            "ganesha.nfsd",
            "-F",
            "-f",
            str(config),
            "-L",
            str(log_path),
            "-p",
            str(state_dir / "ganesha.pid"),
            "-N",
            "NIV_EVENT",
        ]
        with open(state_dir / "ganesha.stderr", "wb") as err:
            proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
            )
        server = cls(export_dir, state_dir, port, proc)
        if not server._wait_listening(timeout):
            server.stop()
            raise MountError(
                f"nfs-ganesha (pid {proc.pid}) did not listen on 127.0.0.1:{port} within "
                f"{timeout:g} s; its log ({log_path}):\n" + _tail(log_path)
            )
        return server

    def _wait_listening(self, timeout: float) -> bool:
        """Bounded wait until the port accepts a connection or the server died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1.0),
            ):
                return True
            time.sleep(0.05)  # between connection attempts to a server still starting
        return False

    def alive(self) -> bool:
        return self._proc.poll() is None

    def stop(self, *, timeout: float = 15.0) -> None:
        """SIGTERM (ganesha's clean shutdown), then SIGKILL; by pid, idempotent."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=timeout)

    def __enter__(self) -> GaneshaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError as exc:
        return f"(could not read the log: {exc})"
