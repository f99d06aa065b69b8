"""The guest side: runs as the guest's agent, reads requests from the control port.

Started by the initramfs's /init (see vm.py) as ``python3 -u _agent.py`` inside the guest's
root, with the NFS export mounted at /mnt/efs. Standard library only. Protocol: one JSON
object per line each way over the virtio serial port named ``efsray.ctl``:

request   {"id": 1, "op": "run", "code": "...", "argv": [...], "timeout": 60, "stats": true}
response  {"id": 1, "rc": 0, "stdout": "...", "stderr": "...", "seconds": 0.4,
           "timed_out": false, "stats_before": "...", "stats_after": "..."}

``run`` executes ``python3 -c code *argv`` in its own process group (killed whole on
timeout), cwd /mnt/efs, with efsray's source on PYTHONPATH; requests run concurrently.
``stats`` adds /proc/self/mountstats read just before and just after the process.
A snippet may report progress before it ends: each line it writes to the file descriptor
named by $EFSRAY_PROGRESS_FD reaches the host at once as {"id": 1, "progress": "line"}.
``signal`` ({"op": "signal", "target": 1, "signal": 10}) signals a running snippet's process
group. ``shutdown`` syncs and ends the agent; /init then powers the guest off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
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
    rfd, wfd = os.pipe()
    env["EFSRAY_PROGRESS_FD"] = str(wfd)
    before = _stats() if req.get("stats") else None
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", req["code"], *req.get("argv", [])],
        cwd=req.get("cwd", MOUNT),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        pass_fds=(wfd,),
    )
    os.close(wfd)
    with lock:
        _RUNNING[req["id"]] = proc
    relay = threading.Thread(target=_relay, args=(req["id"], rfd, out, lock), daemon=True)
    relay.start()
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=req.get("timeout", 300))
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    seconds = time.monotonic() - started
    relay.join(timeout=5)
    with lock:
        _RUNNING.pop(req["id"], None)
    after = _stats() if req.get("stats") else None
    reply = {
        "id": req["id"],
        "rc": proc.returncode,
        "stdout": stdout[-_LIMIT:].decode("utf-8", "replace"),
        "stderr": stderr[-_LIMIT:].decode("utf-8", "replace"),
        "seconds": seconds,
        "timed_out": timed_out,
        "stats_before": before,
        "stats_after": after,
    }
    _send(out, lock, reply)


_RUNNING: dict[int, subprocess.Popen[bytes]] = {}


def _relay(rid: int, rfd: int, out: BinaryIO, lock: threading.Lock) -> None:
    with os.fdopen(rfd, "rb") as f:
        for line in f:
            _send(out, lock, {"id": rid, "progress": line.decode("utf-8", "replace").rstrip("\n")})


def _signal(req: dict[str, Any], out: BinaryIO, lock: threading.Lock) -> None:
    with lock:
        proc = _RUNNING.get(req["target"])
    if proc is not None:
        try:
            os.killpg(proc.pid, req["signal"])
        except ProcessLookupError:
            proc = None
    _send(out, lock, {"id": req["id"], "rc": 0 if proc is not None else 1})


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
                return
            if req.get("op") == "signal":
                _signal(req, out, lock)
                continue
            if req.get("op") == "hello":
                _send(out, lock, {"id": req["id"], "hello": socket.gethostname()})
                continue
            threading.Thread(target=_safe_run, args=(req, out, lock), daemon=True).start()


if __name__ == "__main__":
    main()
