from __future__ import annotations

import os
import time

import pytest

from efsray.deadline import ChildError, run_in_child
from efsray.errors import DeadlineExceeded


def echo(**payload):  # runs in the child
    return {"pid": os.getpid(), "payload": payload}


def block_forever(path: str) -> None:  # runs in the child: blocks until the test releases it
    with open(path, "rb") as fifo:
        fifo.read()


def fail() -> None:
    raise PermissionError(13, "nope")


def test_child_returns_json_result() -> None:
    result = run_in_child("tests.test_deadline:echo", {"a": 1}, timeout=30)
    assert result["payload"] == {"a": 1}
    assert result["pid"] != os.getpid()


def test_child_error_carries_type_and_errno() -> None:
    with pytest.raises(ChildError) as info:
        run_in_child("tests.test_deadline:fail", timeout=30)
    assert info.value.kind == "PermissionError"
    assert info.value.errno == 13


def test_blocked_child_is_killed_and_reaped_within_deadline(tmp_path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening a FIFO with no writer blocks: a stand-in for a hung mount
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="did not answer"):
        run_in_child("tests.test_deadline:block_forever", {"path": str(fifo)}, timeout=1.0)
    assert time.monotonic() - t0 < 1.0 + 1.0 + 5.0  # deadline + kill grace + slack
    # No probe child of ours is left, zombie or alive.
    assert _probe_children() == []


def _probe_children() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid_text = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        # a zombie has an empty command line: count every zombie child of ours
        if int(ppid_text) == os.getpid() and (state == "Z" or b"efsray._child" in cmdline):
            found.append(int(entry))
    return found
