"""The guest side: runs as the guest's agent, reads requests from the control port.

Started by the initramfs's /init (see vm.py) as ``python3 -u _agent.py`` inside the guest's
root, with the NFS export mounted at /mnt/efs. Standard library only. Protocol: one JSON
object per line each way over the virtio serial port named ``efsray.ctl``:

request   {"id": 1, "op": "run", "code": "...", "argv": [...], "timeout": 60, "stats": true}
response  {"id": 1, "rc": 0, "stdout": "...", "stderr": "...", "seconds": 0.4,
           "timed_out": false, "stats_before": "...", "stats_after": "..."}

``run`` executes ``code`` as ``__main__`` with ``sys.argv = ["-c", *argv]`` in a process
forked from a fork server that imported numpy, pyarrow and efsray.store once at boot (so a
snippet starts in well under a second instead of 15-20 s under TCG), in its own process group
(killed whole on timeout), cwd /mnt/efs; requests run concurrently.
``stats`` adds /proc/self/mountstats read just before and just after the process.
A snippet may report progress before it ends: each line it writes to the file descriptor
named by $EFSRAY_PROGRESS_FD reaches the host at once as {"id": 1, "progress": "line"}.
``signal`` ({"op": "signal", "target": 1, "signal": 10}) signals a running snippet's process
group. ``shutdown`` syncs and ends the agent; /init then powers the guest off.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, BinaryIO

MOUNT = "/mnt/efs"
_LIMIT = 1 << 20  # bytes of stdout/stderr sent back (bigger results go through the export)


def _port() -> str:
    base = "/sys/class/virtio-ports"
    for entry in sorted(os.listdir(base)):
        with open(os.path.join(base, entry, "name")) as f:
            if f.read().strip() == "efsray.ctl":
                return "/dev/" + entry
    raise SystemExit("efsray-guest: no virtio port named efsray.ctl")


def _stats() -> str:
    with open("/proc/self/mountstats") as f:
        return f.read()


#: Imported once by the fork server; every snippet is a fork of it (importing these under
#: TCG costs 15-20 s per process on a loaded machine, a fork well under one).
PRELOAD = ["numpy", "pyarrow", "efsray.store"]


def _snippet(code: str, argv: list[str], cwd: str, env: dict[str, str], out: str) -> None:
    """The body of one snippet process (forked from the fork server)."""
    os.setsid()  # its own process group: a timeout kills it and everything it started
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        target = os.open(f"{out}.{name}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 - fd 1 itself
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115 - fd 2 itself
    progress = os.open(f"{out}.progress", os.O_WRONLY)
    os.environ["EFSRAY_PROGRESS_FD"] = str(progress)
    sys.argv = ["-c", *argv]
    code_rc = 0
    try:
        exec(compile(code, "<snippet>", "exec"), {"__name__": "__main__"})  # noqa: S102
    except SystemExit as exc:
        code_rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported like an uncaught exception would be
        import traceback

        traceback.print_exc()
        code_rc = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code_rc)


def _run(req: dict[str, Any], out: BinaryIO, lock: threading.Lock) -> None:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "PYTHONPATH": "/opt/efsray",
        "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": "/tmp",  # noqa: S108 - the guest's private tmpfs
        "LANG": "C.UTF-8",
        "EFSRAY_GUEST": socket.gethostname(),
        **req.get("env", {}),
    }
    base = f"/tmp/efsray-snippet-{req['id']}"  # noqa: S108 - the guest's private tmpfs
    os.mkfifo(f"{base}.progress")
    before = _stats() if req.get("stats") else None
    started = time.monotonic()
    proc = _CTX.Process(
        target=_snippet,
        args=(req["code"], req.get("argv", []), req.get("cwd", MOUNT), env, base),
        daemon=False,
    )
    proc.start()
    pid = proc.pid
    assert pid is not None
    with lock:
        _RUNNING[req["id"]] = pid
    relay = threading.Thread(target=_relay, args=(req["id"], base, out, lock), daemon=True)
    relay.start()
    proc.join(timeout=req.get("timeout", 300))
    timed_out = proc.exitcode is None
    if timed_out:
        os.killpg(pid, signal.SIGKILL)
        proc.join()
    seconds = time.monotonic() - started
    with lock:
        _RUNNING.pop(req["id"], None)
    after = _stats() if req.get("stats") else None
    with contextlib.suppress(OSError):  # a snippet that died before opening its FIFO
        os.close(os.open(f"{base}.progress", os.O_WRONLY | os.O_NONBLOCK))
    relay.join(timeout=5)
    results = {}
    for name in ("stdout", "stderr"):
        try:
            with open(f"{base}.{name}", "rb") as f:
                results[name] = f.read()[-_LIMIT:].decode("utf-8", "replace")
            os.unlink(f"{base}.{name}")
        except FileNotFoundError:
            results[name] = ""
    reply = {
        "id": req["id"],
        "rc": proc.exitcode,
        "stdout": results["stdout"],
        "stderr": results["stderr"],
        "seconds": seconds,
        "timed_out": timed_out,
        "stats_before": before,
        "stats_after": after,
    }
    _send(out, lock, reply)


_RUNNING: dict[int, int] = {}  # request id -> pid (its process group)
_CTX = multiprocessing.get_context("forkserver")


def _relay(rid: int, base: str, out: BinaryIO, lock: threading.Lock) -> None:
    # opening the FIFO waits for the snippet to open its end; it ends when the snippet does
    with open(f"{base}.progress", "rb") as f:
        for line in f:
            _send(out, lock, {"id": rid, "progress": line.decode("utf-8", "replace").rstrip("\n")})
    os.unlink(f"{base}.progress")


def _signal(req: dict[str, Any], out: BinaryIO, lock: threading.Lock) -> None:
    with lock:
        pid = _RUNNING.get(req["target"])
    if pid is not None:
        try:
            os.killpg(pid, req["signal"])
        except ProcessLookupError:
            pid = None
    _send(out, lock, {"id": req["id"], "rc": 0 if pid is not None else 1})


def _send(out: BinaryIO, lock: threading.Lock, obj: dict[str, Any]) -> None:
    data = (json.dumps(obj) + "\n").encode()
    with lock:
        out.write(data)
        out.flush()


def _safe_run(req: dict[str, Any], out: BinaryIO, lock: threading.Lock) -> None:
    try:
        _run(req, out, lock)
    except Exception as exc:  # noqa: BLE001 - the host must get an answer, whatever failed
        _send(out, lock, {"id": req.get("id"), "error": f"{type(exc).__name__}: {exc}"})


def main() -> None:
    _CTX.set_forkserver_preload(PRELOAD)
    warm = _CTX.Process(target=os.getpid)  # starts the fork server: imports happen at boot
    warm.start()
    warm.join()
    path = _port()
    fd = os.open(path, os.O_RDWR)
    inp = os.fdopen(fd, "rb", buffering=0)
    out = os.fdopen(os.dup(fd), "wb", buffering=0)
    lock = threading.Lock()
    _send(out, lock, {"id": 0, "hello": socket.gethostname(), "python": sys.version})
    buf = b""
    while True:
        chunk = inp.read(65536)
        if not chunk:
            # the host side is not connected yet (or went away): wait for it
            time.sleep(0.05)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            req = json.loads(line)
            if req.get("op") == "shutdown":
                os.sync()
                _send(out, lock, {"id": req["id"], "rc": 0})
                os._exit(0)  # no interpreter shutdown (it would wait for the fork server)
            if req.get("op") == "signal":
                _signal(req, out, lock)
                continue
            if req.get("op") == "hello":
                _send(out, lock, {"id": req["id"], "hello": socket.gethostname()})
                continue
            threading.Thread(target=_safe_run, args=(req, out, lock), daemon=True).start()


if __name__ == "__main__":
    main()
