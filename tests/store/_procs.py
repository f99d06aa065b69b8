"""One multiprocessing context for every multi-process store test.

forkserver, not fork: the test process has run pyarrow's thread pools, and a fork of a
process with threads may copy a lock held by another thread (a deadlock in the child). The
fork server is a clean process with the heavy modules preloaded, so a child still starts in
milliseconds and hundreds of SIGKILLs stay cheap.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterable
from multiprocessing.context import BaseContext
from typing import Any

_PRELOAD = ["pandas", "efsray.store", "tests.store._workers", "tests.store._ckpt_workers"]


def context() -> BaseContext:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def join_or_kill(procs: Iterable[Any], timeout: float = 30) -> None:
    """Wait for each process to end; SIGKILL the ones still running after ``timeout``."""
    for proc in procs:
        proc.join(timeout)
        if proc.exitcode is None:
            proc.kill()
            proc.join(5)
