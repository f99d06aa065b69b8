"""Task hooks the sweep tests inject into Ray workers (``TaskSpec.hook``).

They run inside worker processes on any node; they coordinate with the test through files
next to the store root (``<root>/../<name>``), created with O_EXCL so that exactly one worker
acts, once.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from efsray.errors import InvalidDataError, StorageError
from efsray.store.nfs import ensure_dir, write_temp


def _claim(root: str, name: str, info: Mapping[str, Any]) -> bool:
    """True for exactly one caller per (root, name)."""
    marker = Path(root).parent / name
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "task": info.get("task"), "run_id": info.get("run_id")}, f)
    return True


def kill_mid_write(event: str, info: Mapping[str, Any]) -> None:
    """SIGKILL this worker in the middle of saving a result, once at least 3 results of its
    task are saved: the run's bytes are in a temporary file (written and fsync'ed exactly as
    the store's commit protocol does) but not yet linked into place. Other writer threads
    of the task may be anywhere in their own saves when the kill lands."""
    if event != "before_save" or info["attempt"] != 0 or info["saved"] < 3:
        return
    if not _claim(info["root"], "killed-mid-write", info):
        return
    path = Path(info["path"])
    ensure_dir(path.parent)  # the save would make its run directory first
    write_temp(path, b'{"format": 1, "kind": "backtest-run", "metrics": {')
    os.kill(os.getpid(), signal.SIGKILL)


def fail_symbol_b(event: str, info: Mapping[str, Any]) -> None:
    """Every task of symbol B fails with an error that no retry can fix."""
    if event == "task_start" and str(info["task"]).startswith("B."):
        raise InvalidDataError("symbol B is broken on purpose")


def storage_error_once(event: str, info: Mapping[str, Any]) -> None:
    """The first attempt of one task hits a storage error (retryable); the retry works."""
    if event == "task_start" and info["attempt"] == 0 and _claim(info["root"], "eio", info):
        raise StorageError(5, "EIO on purpose (a flaky mount)", info["root"])
