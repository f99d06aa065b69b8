"""Run a probe in a child process under a deadline, so that a hung mount cannot hang us.

A ``hard`` NFS mount whose server is gone blocks ``stat``/``statfs``/``open`` forever, and a
thread blocked in such a call can neither be interrupted nor joined. So every probe that
touches a possibly-dead mount runs here: in a fresh Python child (its own session, so the
whole group can be killed), with JSON in and JSON out (no pickle), and a deadline. When the
deadline passes the group is sent SIGKILL; a child stuck in an uninterruptible wait is reaped
by a daemon thread as soon as the kernel lets it go, so no zombie outlives it and the caller is
never blocked past ``timeout + kill_grace`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from efsray.errors import DeadlineExceeded, EfsrayError, StorageError

__all__ = ["MAX_TIMEOUT", "ChildError", "kill_and_reap", "run_in_child"]

MAX_TIMEOUT = 7 * 86400.0
"""The longest deadline accepted, in seconds (a week): beyond, waits overflow the OS timers."""


class ChildError(EfsrayError):
    """The child ran but its target raised; carries the child's exception type and errno."""

    def __init__(self, message: str, *, kind: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.errno = errno


def run_in_child(
    target: str,
    payload: Mapping[str, Any] | None = None,
    *,
    timeout: float,
    kill_grace: float = 1.0,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Call ``module:function(**payload)`` in a child Python and return its JSON result.

    Raises :class:`DeadlineExceeded` when the child has not answered within ``timeout``
    seconds (it is killed), :class:`ChildError` when the target raised, and
    :class:`StorageError` when the child could not be started or died without answering.
    """
    if not 0 < timeout <= MAX_TIMEOUT:  # also refuses nan; inf overflows the wait
        raise ValueError(f"timeout must be > 0 and <= {MAX_TIMEOUT:g} seconds, got {timeout!r}")
    request = json.dumps({"target": target, "payload": dict(payload or {})}).encode()
    child_env = dict(os.environ if env is None else env)
    # The child must import the same efsray as we do (a source checkout on PYTHONPATH too).
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in [_package_parent(), child_env.get("PYTHONPATH", "")] if p
    )
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "efsray._child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=child_env,
        )
    except OSError as exc:
        raise StorageError(exc.errno or 0, f"could not start a probe child: {exc}") from exc
    try:
        out, err = proc.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_and_reap(proc, kill_grace)
        raise DeadlineExceeded(
            f"{target} did not answer within {timeout:g} s (waited "
            f"{time.monotonic() - started:.1f} s); the filesystem or service it probes is "
            "probably hung. The probe was killed."
        ) from None
    return _decode(target, proc.returncode, out, err)


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# The name of each thread that reaps a process later (a test or a debugger can find and
# join them).
REAPER_PREFIX = "efsray-reap-"


def kill_and_reap(proc: subprocess.Popen[Any], grace: float) -> None:
    """SIGKILL the process group of ``proc`` (started with ``start_new_session=True``) and
    reap it; if the kernel still holds it after ``grace`` seconds (uninterruptible sleep on
    a hung mount), a daemon thread reaps it later, so neither a zombie nor the caller waits."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        # Uninterruptible sleep (a hard NFS mount): SIGKILL is pending and takes effect when
        # the kernel call returns. Reap it then, off the caller's thread.
        threading.Thread(
            target=_reap_later, args=(proc,), name=f"{REAPER_PREFIX}{proc.pid}", daemon=True
        ).start()
        return
    _close_pipes(proc)


def _reap_later(proc: subprocess.Popen[Any]) -> None:
    proc.wait()
    _close_pipes(proc)


def _close_pipes(proc: subprocess.Popen[Any]) -> None:
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def _decode(target: str, returncode: int, out: bytes, err: bytes) -> Any:
    try:
        answer = json.loads(out.decode() or "null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        answer = None
    if not isinstance(answer, dict):
        tail = err.decode(errors="replace").strip().splitlines()[-3:]
        raise StorageError(
            0,
            f"probe {target} exited with status {returncode} without an answer: "
            + (" | ".join(tail) or "no output"),
        )
    if "error" in answer:
        e = answer["error"]
        raise ChildError(str(e.get("message")), kind=str(e.get("type")), errno=e.get("errno"))
    return answer.get("result")
