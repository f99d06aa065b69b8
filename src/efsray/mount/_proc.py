"""Run mount(8)/umount(8) with a deadline that holds even when the kernel call hangs.

``subprocess.run(timeout=...)`` kills the child and then waits for it, and for its output,
with no limit: a ``mount.nfs`` stuck in the kernel (D state) would block us forever. Here the
child gets its own session so the whole group (mount and its mount.nfs helper) is killed, the
wait after the kill is bounded, and a child the kernel still holds is reaped by a daemon thread
once it lets go, so no zombie is left and the caller is free.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping, Sequence

from efsray.deadline import kill_and_reap
from efsray.errors import DeadlineExceeded

__all__ = ["run_bounded"]


def run_bounded(
    argv: Sequence[str],
    *,
    timeout: float,
    kill_grace: float = 1.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (stdin closed, output captured as text) and return its result.

    Raises :class:`DeadlineExceeded` once ``timeout`` has passed (the process group was sent
    SIGKILL), and ``OSError`` when the program cannot be started (``FileNotFoundError`` when
    it is not on PATH).
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=None if env is None else dict(env),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_and_reap(proc, kill_grace)
        raise DeadlineExceeded(
            f"{argv[0]} did not finish within {timeout:g} s "
            f"(waited {time.monotonic() - started:.1f} s) and was killed"
        ) from None
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
