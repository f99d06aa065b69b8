"""QEMU guests (TCG) with a real Linux NFS v4.1 client, driven from the host.

Each guest boots Debian's cloud kernel with a busybox initramfs, mounts the read-only root
image of :mod:`.image`, mounts the host's NFS server (nfs-ganesha on 127.0.0.1, seen from
the guest as 10.0.2.2 through QEMU user networking) at ``/mnt/efs`` with EFS's options, and
runs an agent that executes Python snippets sent over a virtio serial port::

    from efsray.testing.guests import boot_guests
    with boot_guests(image, nfs_port=server.port, workdir=tmp, count=3) as guests:
        a, b, c = guests
        r = a.run("import os; print(os.listdir('.'))")   # cwd is the mount
        r.check().stdout
        b.call(my_module.my_function, "arg", 3)          # the function's return value (JSON)

efsray's source under test (the ``efsray`` package this module is imported from) is copied
into each run's initramfs and is on the guest's PYTHONPATH, so a code change never rebuilds
the image. A guest has no default route: it reaches only the host's loopback (10.0.2.2).

**Per-operation NFS counts, the figure of record** (issue 18): ``run(code, stats=True)``
reads the guest kernel's ``/proc/self/mountstats`` just before and just after the snippet's
process and returns the difference for the mount: ``result.nfs_ops`` maps each NFS operation
that ran (READ, WRITE, COMMIT, OPEN, CLOSE, LOOKUP, GETATTR, ACCESS, LINK, RENAME, REMOVE,
CREATE, ...) to its count, ``result.nfs_intervals`` adds retransmissions and mean RTT/execute
times (:class:`efsray.monitor.mountstats.OpInterval`). Snippets fork from a fork server that
imported their modules from the local root, so starting one costs the mount nothing; the counts
do include anything else that guest's client did meanwhile, so run measured snippets alone on
their guest. ``measure`` runs setup and body in one process and
counts only the body::

    ops = guest.measure("from efsray.store import Store; s = Store('st')",
                        "s.market.tail('SPY', '1m', 1000)").nfs_ops
    # e.g. tail(10) of a 3-version series, measured:
    # {'ACCESS': 1, 'CLOSE': 3, 'LOOKUP': 2, 'OPEN_NOATTR': 3, 'READ': 1}

Shutdown: the agent syncs and exits, the guest powers off, QEMU exits; a guest that does not
is killed by pid. Console output (kernel and /init messages) is in ``<workdir>/<name>/console.log``.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efsray.errors import EfsrayError
from efsray.monitor.mountstats import OpInterval, mount_for_path, op_intervals, parse_mountstats
from efsray.testing.guests.image import GuestImage
from efsray.testing.guests.initramfs import (
    EFS_MOUNT_OPTIONS,
    FAILED,
    READY,
    build_initramfs,
    qemu_command,
)

__all__ = [
    "EFS_MOUNT_OPTIONS",
    "Guest",
    "GuestError",
    "GuestResult",
    "Running",
    "boot_guests",
    "build_initramfs",
]

MOUNT_POINT = "/mnt/efs"
_RESULT = "\x1eefsray-result:"


class GuestError(EfsrayError, RuntimeError):
    """A guest did not boot, or a snippet failed in it."""


@dataclass(frozen=True, slots=True)
class GuestResult:
    """What one snippet did in a guest."""

    guest: str
    rc: int
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool
    stats_before: str | None = None
    stats_after: str | None = None
    nfs_intervals: dict[str, OpInterval] = field(default_factory=dict)

    @property
    def nfs_ops(self) -> dict[str, int]:
        """NFS operations the guest's client sent during the snippet, by name (non-zero)."""
        return {k: v.operations for k, v in sorted(self.nfs_intervals.items()) if v.operations}

    def check(self) -> GuestResult:
        """This result, or GuestError with the snippet's stderr when it failed."""
        if self.rc != 0 or self.timed_out:
            what = "timed out" if self.timed_out else f"exited with {self.rc}"
            raise GuestError(
                f"snippet on guest {self.guest} {what}; its stderr:\n{self.stderr[-4000:]}"
            )
        return self

    def value(self) -> Any:
        """The JSON value a :meth:`Guest.call` returned."""
        self.check()
        for line in reversed(self.stdout.split("\n")):  # not splitlines: it splits at \x1e
            if line.startswith(_RESULT):
                return json.loads(line[len(_RESULT) :])
        raise GuestError(f"snippet on guest {self.guest} printed no result: {self.stdout[-500:]}")


def _delta(before: str | None, after: str | None) -> dict[str, OpInterval]:
    if before is None or after is None:
        return {}
    first = mount_for_path(parse_mountstats(before), MOUNT_POINT)
    second = mount_for_path(parse_mountstats(after), MOUNT_POINT)
    if second is None or not second.is_nfs:
        return {}
    intervals, _ = op_intervals(first, second)
    return intervals


class Guest:
    """One running QEMU guest; use :func:`boot_guests` to make them."""

    def __init__(self, name: str, workdir: Path, proc: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.workdir = workdir
        self._proc = proc
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._next = 1
        self._waiting: dict[int, Future[dict[str, Any]]] = {}
        self._progress: dict[int, queue.Queue[str]] = {}
        self._reader: threading.Thread | None = None
        self.started = time.monotonic()
        self.boot_seconds: float | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def console(self) -> Path:
        return self.workdir / "console.log"

    def __repr__(self) -> str:
        return f"Guest({self.name!r}, pid={self.pid})"

    def console_tail(self, lines: int = 40) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])

    # -- boot -------------------------------------------------------------------------------

    def wait_ready(self, deadline: float) -> None:
        """Poll the console for /init's marker, then connect to the agent."""
        while True:
            text = self.console.read_text(errors="replace") if self.console.exists() else ""
            if FAILED in text or self._proc.poll() is not None:
                raise GuestError(
                    f"guest {self.name} failed to boot (qemu exit {self._proc.poll()}); "
                    f"console:\n{self.console_tail()}"
                )
            if READY in text:
                break
            if time.monotonic() > deadline:
                raise GuestError(
                    f"guest {self.name} did not boot within the deadline; console:\n"
                    f"{self.console_tail()}"
                )
            time.sleep(0.1)  # polling the console file for the marker, bounded by deadline
        self._connect(deadline)
        self.boot_seconds = time.monotonic() - self.started

    def _connect(self, deadline: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.workdir / "ctl.sock"))
        self._sock = sock
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        while True:  # the agent may not be reading yet: say hello until it answers
            future = self._send({"op": "hello"})
            try:
                future.result(timeout=1.0)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise GuestError(
                        f"guest {self.name}'s agent did not answer; console:\n{self.console_tail()}"
                    ) from None

    def _read_loop(self) -> None:
        assert self._sock is not None
        buf = b""
        while True:
            try:
                chunk = self._sock.recv(1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                with self._lock:
                    if "progress" in msg:
                        progress = self._progress.get(msg.get("id"))
                        if progress is not None:
                            progress.put(msg["progress"])
                        continue
                    future = self._waiting.pop(msg.get("id"), None)
                    self._progress.pop(msg.get("id"), None)
                if future is not None:
                    future.set_result(msg)
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for future in waiting.values():
            future.set_exception(GuestError(f"guest {self.name}'s control channel closed"))

    def _send(
        self, request: dict[str, Any], progress: queue.Queue[str] | None = None
    ) -> Future[dict[str, Any]]:
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            request = dict(request, id=self._next)
            future.request_id = self._next  # type: ignore[attr-defined]
            self._waiting[self._next] = future
            if progress is not None:
                self._progress[self._next] = progress
            self._next += 1
            if self._sock is None:
                raise GuestError(f"guest {self.name} is not connected")
            self._sock.sendall((json.dumps(request) + "\n").encode())
        return future

    # -- running snippets -------------------------------------------------------------------

    def submit(
        self,
        code: str,
        *argv: str,
        timeout: float = 300.0,
        stats: bool = False,
        env: dict[str, str] | None = None,
    ) -> Running:
        """Start ``code`` in the guest as ``__main__`` with ``sys.argv == ["-c", *argv]``, in a
        fork of the agent's fork server (numpy, pyarrow, efsray.store already imported), its
        own process group, cwd the NFS mount."""
        progress: queue.Queue[str] = queue.Queue()
        raw = self._send(
            {
                "op": "run",
                "code": code,
                "argv": list(argv),
                "timeout": timeout,
                "stats": stats,
                "env": env or {},
            },
            progress,
        )
        done: Future[GuestResult] = Future()

        def finish(f: Future[dict[str, Any]]) -> None:
            try:
                msg = f.result()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's future
                done.set_exception(exc)
                return
            if "error" in msg:
                done.set_exception(GuestError(f"guest {self.name}'s agent: {msg['error']}"))
                return
            done.set_result(
                GuestResult(
                    guest=self.name,
                    rc=msg["rc"],
                    stdout=msg["stdout"],
                    stderr=msg["stderr"],
                    seconds=msg["seconds"],
                    timed_out=msg["timed_out"],
                    stats_before=msg.get("stats_before"),
                    stats_after=msg.get("stats_after"),
                    nfs_intervals=_delta(msg.get("stats_before"), msg.get("stats_after")),
                )
            )

        raw.add_done_callback(finish)
        return Running(self, raw.request_id, done, progress)  # type: ignore[attr-defined]

    def signal(self, request_id: int, signum: int) -> bool:
        """Send ``signum`` to a running snippet's process group; False if it has ended."""
        answer = self._send({"op": "signal", "target": request_id, "signal": int(signum)})
        return bool(answer.result(timeout=60)["rc"] == 0)

    def run(
        self,
        code: str,
        *argv: str,
        timeout: float = 300.0,
        stats: bool = False,
        env: dict[str, str] | None = None,
    ) -> GuestResult:
        """Run a snippet and wait for it (the host waits ``timeout`` plus a margin)."""
        return self.submit(code, *argv, timeout=timeout, stats=stats, env=env).result(
            timeout=timeout + 60.0
        )

    def measure(self, setup: str, body: str, *, timeout: float = 300.0) -> GuestResult:
        """Run ``setup`` then ``body`` in one process; ``nfs_ops`` counts only ``body``.

        The snippet reads /proc/self/mountstats itself around ``body`` (setup's imports and
        opens are not counted). ``stdout`` is what the snippet printed.
        """
        code = (
            f"{setup}\n"
            "def _efsray_stats():\n"
            "    with open('/proc/self/mountstats') as f:\n"
            "        return f.read()\n"
            "_efsray_before = _efsray_stats()\n"
            f"{body}\n"
            "_efsray_after = _efsray_stats()\n"
            "import json as _efsray_json\n"
            f"print({_RESULT!r} + _efsray_json.dumps([_efsray_before, _efsray_after]))\n"
        )
        result = self.run(code, timeout=timeout)
        before, after = result.value()
        return GuestResult(
            guest=result.guest,
            rc=result.rc,
            stdout=result.stdout,
            stderr=result.stderr,
            seconds=result.seconds,
            timed_out=result.timed_out,
            stats_before=before,
            stats_after=after,
            nfs_intervals=_delta(before, after),
        )

    def call_code(self, func: Callable[..., Any], *args: Any) -> str:
        """The snippet that runs ``func(*args)`` from its module's source and prints the
        JSON of its return value (the module must import only what the guest has)."""
        module = inspect.getmodule(func)
        if module is None:
            raise GuestError(f"cannot find the module of {func!r}")
        source = inspect.getsource(module)
        return (
            f"{source}\n"
            "import json as _efsray_json, sys as _efsray_sys\n"
            f"_efsray_value = {func.__name__}(*_efsray_json.loads(_efsray_sys.argv[1]))\n"
            f"print({_RESULT!r} + _efsray_json.dumps(_efsray_value), flush=True)\n"
        )

    def submit_call(self, func: Callable[..., Any], *args: Any, timeout: float = 300.0) -> Running:
        return self.submit(self.call_code(func, *args), json.dumps(args), timeout=timeout)

    def call(self, func: Callable[..., Any], *args: Any, timeout: float = 300.0) -> Any:
        """``func(*args)`` run in the guest; its JSON return value."""
        return self.submit_call(func, *args, timeout=timeout).result(timeout=timeout + 60).value()

    # -- shutdown ---------------------------------------------------------------------------

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the agent to sync and power off; kill QEMU by pid if it does not. Idempotent."""
        if self._proc.poll() is None and self._sock is not None:
            with contextlib.suppress(Exception):
                self._send({"op": "shutdown"}).result(timeout=timeout / 2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=timeout / 2)
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=timeout)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()


class Running:
    """A snippet started with :meth:`Guest.submit`: its result, progress lines and signals.

    In the snippet: ``os.write(int(os.environ["EFSRAY_PROGRESS_FD"]), b"ready\\n")``.
    """

    def __init__(
        self, guest: Guest, request_id: int, done: Future[GuestResult], progress: queue.Queue[str]
    ) -> None:
        self.guest = guest
        self.request_id = request_id
        self.future = done
        self._progress = progress

    def result(self, timeout: float | None = None) -> GuestResult:
        return self.future.result(timeout=timeout)

    def wait_progress(self, timeout: float = 300.0) -> str:
        """The next progress line; GuestError if the snippet ends or the deadline passes."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self._progress.get(timeout=0.2)
            except queue.Empty:
                pass
            if self.future.done():
                try:  # a line may have arrived just before the end
                    return self._progress.get_nowait()
                except queue.Empty:
                    result = self.future.result()
                    raise GuestError(
                        f"snippet on guest {self.guest.name} ended (rc {result.rc}) before "
                        f"reporting progress; stderr:\n{result.stderr[-3000:]}"
                    ) from None
            if time.monotonic() > deadline:
                raise GuestError(f"no progress from the snippet on {self.guest.name} in time")

    def signal(self, signum: int) -> bool:
        return self.guest.signal(self.request_id, signum)


@contextlib.contextmanager
def boot_guests(
    image: GuestImage,
    *,
    nfs_port: int | None = None,
    workdir: Path,
    count: int = 3,
    memory_mb: int = 768,
    boot_timeout: float = 600.0,
    names: Sequence[str] | None = None,
    self_served: bool = False,
    scratch_mb: int = 2048,
) -> Iterator[list[Guest]]:
    """Boot ``count`` guests in parallel, each mounting 127.0.0.1:``nfs_port``'s /export.

    With ``self_served``, each guest instead serves a scratch disk of its own (ext4,
    ``scratch_mb``, sparse, made here with ``mke2fs``) with Linux's NFS server (knfsd) and
    mounts it over loopback with the same options (see :mod:`.initramfs`): a kernel server
    beside the host's nfs-ganesha, for the client's counts against each.

    Yields them once all are ready (the agent answers); stops every one on exit, also when
    booting failed. ``boot_timeout`` is generous: TCG on a loaded 2-core machine is slow.
    """
    if not self_served and nfs_port is None:
        raise GuestError("boot_guests needs the host server's nfs_port (or self_served=True)")
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = build_initramfs(image, workdir / "initrd.cpio")
    names = list(names or [f"client{i}" for i in range(count)])
    guests: list[Guest] = []
    try:
        started = time.monotonic()
        for name in names:
            gdir = workdir / name
            gdir.mkdir(exist_ok=True)
            scratch = _scratch_disk(gdir / "scratch.img", scratch_mb) if self_served else None
            cmd = qemu_command(image, initrd, gdir, name, nfs_port, memory_mb, scratch=scratch)
            with open(gdir / "qemu.log", "wb") as log:
                proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
                )
            guests.append(Guest(name, gdir, proc))
        deadline = started + boot_timeout
        with ThreadPoolExecutor(len(guests)) as pool:
            list(pool.map(lambda g: g.wait_ready(deadline), guests))
        yield guests
    finally:
        with ThreadPoolExecutor(max(1, len(guests))) as pool:
            list(pool.map(lambda g: g.stop(), guests))
        if self_served:
            for name in names:
                with contextlib.suppress(OSError):
                    (workdir / name / "scratch.img").unlink()


def _scratch_disk(path: Path, size_mb: int) -> Path:
    """A sparse ext4 image owned by root: a self-served guest's export."""
    done = subprocess.run(
        ["mke2fs", "-q", "-F", "-t", "ext4", "-E", "root_owner=0:0", str(path), f"{size_mb}M"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise GuestError(f"mke2fs of the scratch disk {path} failed: {done.stderr.strip()}")
    return path
