"""The control channel: a Unix socket beside (never inside) the mount, and its client.

Why a socket and not a control file inside the mount: a control file would be served by the
same FUSE worker threads it is meant to control, so a hang (or all workers busy) would lock
the operator out, and reading counters would itself change the counters. The socket is
served by its own thread in the simulator process, outside FUSE.

Protocol: one JSON object per line in each direction; one request per connection.
Requests are ``{"cmd": NAME, ...}``; answers are ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": MESSAGE, "kind": "config" | "internal"}``. The socket lives in a
directory of mode 0700 and has mode 0600: only its owner (and root) can control the mount.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efsray.errors import ConfigError, EfsrayError, MountError
from efsray.simfs.board import OpBoard
from efsray.simfs.faults import FaultRule, HangRule
from efsray.simfs.profiles import get_profile

__all__ = ["ControlServer", "OpCounters", "SimFSControl"]

log = logging.getLogger("efsray.simfs")

_MAX_MESSAGE = 1 << 20
#: Longest path a Unix socket can bind to on Linux (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH = 107


def check_socket_path(path: Path) -> Path:
    if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"control socket path {str(path)!r} is longer than {MAX_SOCKET_PATH} bytes, the "
            "limit of a Unix socket path; pass a shorter --control path (or leave it out to "
            "use the default under the temporary directory)"
        )
    return path


@dataclass(frozen=True, slots=True)
class OpCounters:
    """A snapshot of the simulator's counters. ``counters["write"]`` is 0 for unseen kinds.

    ``ops`` counts FUSE requests by kind (``getattr`` includes lookups); ``faults_injected``
    counts fired faults by ``"op:ERRNO"``; ``hung_now`` is how many operations are blocked,
    and ``hung_pids`` which processes made them.
    """

    ops: Mapping[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_written: int = 0
    open_append: int = 0
    renames_rejected: int = 0
    faults_injected: Mapping[str, int] = field(default_factory=dict)
    hung_now: int = 0
    hung_pids: tuple[int, ...] = ()

    def __getitem__(self, kind: str) -> int:
        return self.ops.get(kind, 0)

    def total(self, kinds: Iterable[str] | None = None, *, exclude: Iterable[str] = ()) -> int:
        """Sum of the operations of ``kinds`` (default: every kind) minus ``exclude``."""
        chosen = set(self.ops) if kinds is None else set(kinds)
        chosen -= set(exclude)
        return sum(self.ops.get(kind, 0) for kind in chosen)

    @property
    def faults_total(self) -> int:
        return sum(self.faults_injected.values())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OpCounters:
        return cls(
            ops=dict(data.get("ops", {})),
            bytes_read=int(data.get("bytes_read", 0)),
            bytes_written=int(data.get("bytes_written", 0)),
            open_append=int(data.get("open_append", 0)),
            renames_rejected=int(data.get("renames_rejected", 0)),
            faults_injected=dict(data.get("faults_injected", {})),
            hung_now=int(data.get("hung_now", 0)),
            hung_pids=tuple(int(pid) for pid in data.get("hung_pids", ())),
        )


class SimFSControl:
    """Client of a running simulator's control socket. Thread-safe; holds no connection.

    >>> ctl = SimFSControl("/tmp/efsray-simfs-0/abc.sock")        # doctest: +SKIP
    >>> ctl.reset(); do_something(); ctl.counters()["write"]       # doctest: +SKIP
    """

    def __init__(self, socket_path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SimFSControl({str(self.socket_path)!r})"

    def request(self, cmd: str, *, timeout: float | None = None, **args: Any) -> Any:
        """Send one command and return its result; raise on a refused or failed command."""
        message = json.dumps({"cmd": cmd, **args}).encode() + b"\n"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout if timeout is None else timeout)
                sock.connect(str(self.socket_path))
                sock.sendall(message)
                answer = _read_line(sock)
        except (OSError, ValueError) as exc:
            raise MountError(
                f"the simfs control socket {self.socket_path} did not answer {cmd!r}: {exc}. "
                "Is the simulator running (efsray simulate ...)?"
            ) from exc
        if answer.get("ok"):
            return answer.get("result")
        error = str(answer.get("error"))
        if answer.get("kind") == "config":
            raise ConfigError(error)
        raise MountError(f"the simulator failed {cmd!r}: {error}")

    # --- observation ---------------------------------------------------------------------
    def ping(self) -> bool:
        """True when the simulator answers (whether or not the mount is up yet)."""
        try:
            self.request("status", timeout=min(self.timeout, 2.0))
        except MountError:
            return False
        return True

    def status(self) -> dict[str, Any]:
        """Mount point, backing directory, pid, profile, armed rules, blocked operations."""
        return dict(self.request("status"))

    def counters(self) -> OpCounters:
        return OpCounters.from_dict(self.request("counters", reset=False))

    def reset(self) -> OpCounters:
        """Zero the counters; returns their values just before (one atomic step)."""
        return OpCounters.from_dict(self.request("counters", reset=True))

    # --- faults and hangs ----------------------------------------------------------------
    def inject(
        self,
        error: str = "EIO",
        *,
        ops: str | Iterable[str] | None = None,
        path: str = "*",
        nth: int = 1,
        probability: float | None = None,
        times: int | None = 1,
    ) -> int:
        """Arm a fault (see :class:`~efsray.simfs.faults.FaultRule`); returns its id."""
        rule = FaultRule(
            error=error.upper(),
            ops=_ops_arg(ops),
            path=path,
            nth=nth,
            probability=probability,
            times=times,
        )
        return int(self.request("fault", rule=rule.to_dict()))

    def clear_faults(self, rule_id: int | None = None) -> int:
        """Disarm one fault (by id) or all; returns how many were disarmed."""
        return int(self.request("clear_faults", id=rule_id))

    def hang(self, *, ops: str | Iterable[str] | None = None, path: str = "*", nth: int = 1) -> int:
        """Block matching operations from the ``nth`` on until :meth:`release`; returns an id."""
        rule = HangRule(ops=_ops_arg(ops), path=path, nth=nth)
        return int(self.request("hang", rule=rule.to_dict()))

    def release(self) -> int:
        """Disarm every hang and unblock every blocked operation; returns how many were."""
        return int(self.request("release"))

    def wait_hung(self, count: int = 1, *, timeout: float = 10.0) -> int:
        """Wait until ``count`` operations are blocked by a hang; raise if they never are."""
        hung = int(self.request("wait_hung", count=count, wait=timeout, timeout=timeout + 5.0))
        if hung < count:
            raise MountError(
                f"only {hung} operation(s) blocked on the hang after {timeout:g} s, expected "
                f"{count}; did the code under test reach the filesystem?"
            )
        return hung

    def start_trace(self) -> None:
        """Record every counted operation from now on (kind and paths, in order)."""
        self.request("trace", on=True)

    def stop_trace(self) -> list[tuple[str, ...]]:
        """Stop recording and return the operations: ``[("create", "/a/.tmp"), ...]``.

        ``release`` and ``releasedir`` are not recorded (they never hang or fail).
        """
        return [tuple(item) for item in self.request("trace", on=False)]

    # --- configuration -------------------------------------------------------------------
    def set_profile(self, name: str, **overrides: Any) -> dict[str, Any]:
        """Switch the latency profile (with optional field overrides, in seconds)."""
        get_profile(name, **overrides)  # validate here too, for a local traceback
        return dict(self.request("profile", name=name, overrides=overrides))

    def shutdown(self) -> None:
        """Ask the simulator to release hangs, unmount and exit."""
        self.request("shutdown")


def _ops_arg(ops: str | Iterable[str] | None) -> Any:
    return ops if ops is None or isinstance(ops, str) else list(ops)


def _read_line(sock: socket.socket) -> Any:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if chunk.endswith(b"\n") or size > _MAX_MESSAGE:
            break
    data = b"".join(chunks)
    if size > _MAX_MESSAGE:
        raise ValueError(f"message longer than {_MAX_MESSAGE} bytes")
    if not data:
        raise ValueError("connection closed without an answer")
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


class ControlServer:
    """Serves the control protocol for ``board`` on a Unix socket, from its own threads."""

    def __init__(
        self,
        socket_path: Path,
        board: OpBoard,
        *,
        status: Callable[[], dict[str, Any]],
        on_shutdown: Callable[[], None],
    ) -> None:
        self.socket_path = check_socket_path(socket_path)
        self._board = board
        self._status = status
        self._on_shutdown = on_shutdown
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        directory = self.socket_path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a stale socket of a dead simulator
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.socket_path))
        finally:
            os.umask(old_umask)
        sock.listen(16)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="simfs-control", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _serve(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                conn, _addr = self._sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("control socket accept failed")
                continue
            threading.Thread(
                target=self._handle, args=(conn,), name="simfs-control-conn", daemon=True
            ).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30.0)
            try:
                request = _read_line(conn)
                answer = {"ok": True, "result": self._dispatch(request)}
            except (ConfigError, ValueError, TypeError, KeyError) as exc:
                answer = {"ok": False, "error": str(exc), "kind": "config"}
            except (EfsrayError, OSError) as exc:
                log.exception("control command failed")
                answer = {"ok": False, "error": str(exc), "kind": "internal"}
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def _dispatch(self, request: Mapping[str, Any]) -> Any:
        cmd = request.get("cmd")
        board = self._board
        if cmd == "status":
            return {**self._status(), **board.rules(), "hung_now": board.counters()["hung_now"]}
        if cmd == "counters":
            return board.counters(reset=bool(request.get("reset", False)))
        if cmd == "fault":
            return board.arm_fault(FaultRule.from_dict(request["rule"]))
        if cmd == "clear_faults":
            rule_id = request.get("id")
            if rule_id is not None and not isinstance(rule_id, int):
                raise ConfigError(f"a fault id is an integer, got {rule_id!r}")
            return board.clear_faults(rule_id)
        if cmd == "hang":
            return board.arm_hang(HangRule.from_dict(request["rule"]))
        if cmd == "release":
            return board.release()
        if cmd == "wait_hung":
            count, wait = request.get("count", 1), request.get("wait", 10.0)
            if not isinstance(count, int) or not isinstance(wait, int | float) or wait < 0:
                raise ConfigError(f"wait_hung needs an integer count and seconds >= 0: {request}")
            return board.wait_hung(count, min(float(wait), 3600.0))
        if cmd == "profile":
            overrides = request.get("overrides") or {}
            if not isinstance(overrides, dict):
                raise ConfigError(f"profile overrides must be an object, got {overrides!r}")
            profile = get_profile(str(request.get("name")), **overrides)
            board.set_profile(profile)
            return profile.as_dict()
        if cmd == "trace":
            if request.get("on"):
                board.start_trace()
                return True
            return board.stop_trace()
        if cmd == "shutdown":
            threading.Thread(target=self._on_shutdown, name="simfs-shutdown", daemon=True).start()
            return True
        raise ConfigError(
            f"unknown control command {cmd!r}; known: status, counters, fault, clear_faults, "
            "hang, release, wait_hung, trace, profile, shutdown"
        )
