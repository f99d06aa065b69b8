"""The one bounded wait of the test suite: until a condition holds, or fail.

Standard library only: the conformance cases that use it are shipped to a child Python and to
the QEMU guests without pytest's helpers (tests/conformance/remote.py lists this module).

Where the thing waited for can wake us, the pause between tries waits on it: ``watch`` takes
processes (``subprocess.Popen`` objects or pids) whose exit ends the pause at once (pidfds in
``select``), and the condition is checked right after. The states tests wait for otherwise
(an HTTP answer, a container's health, another NFS client's caches expiring) send no
notification, so there the pause is ``every`` seconds, never past the deadline.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(
    what: str,
    condition: Callable[[], T],
    *,
    timeout: float,
    every: float = 0.05,
    tolerate: tuple[type[BaseException], ...] = (),
    watch: Iterable[Any] = (),
) -> T:
    """``condition()``'s first truthy value; AssertionError naming ``what`` after ``timeout``
    seconds. Exceptions of the ``tolerate`` types count as "not yet" (the last one is named
    in the failure); any other propagates at once."""
    deadline = time.monotonic() + timeout
    fds = [fd for fd in (_pidfd(p) for p in watch) if fd is not None]
    last: BaseException | None = None
    try:
        while True:
            try:
                value = condition()
                if value:
                    return value
            except tolerate as exc:
                last = exc
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for {what}"
                    + (f" (last error: {last!r})" if last is not None else "")
                )
            ready, _, _ = select.select(fds, [], [], min(every, left))
            for fd in ready:  # exited: the condition is checked once more, now
                os.close(fd)
            fds = [fd for fd in fds if fd not in ready]
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _pidfd(process: Any) -> int | None:
    pid = process if isinstance(process, int) else process.pid
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
