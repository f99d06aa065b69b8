"""Task hooks the sweep tests inject into Ray workers (``TaskSpec.hook``).

They run inside worker processes on any node; they coordinate with the test through files
next to the store root (``<root>/../<name>``), created with O_EXCL so that exactly one worker
acts, once.
"""

from __future__ import annotations

import itertools
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
    """SIGKILL this worker in the middle of committing a batch of results, once at least
    one batch (3 results) of its task is committed: the batch's segment is half written
    under its final name (which no manifest names yet) and its manifest is in a temporary
    file, exactly where the store's commit protocol would be when the kill lands."""
    if event != "before_save" or info["attempt"] != 0 or info["saved"] < 3:
        return
    if not _claim(info["root"], "killed-mid-write", {**info, "run_id": info["run_ids"][0]}):
        return
    table = Path(info["root"]) / "results" / "tables" / info["strategy"]
    ensure_dir(table / "data")
    segment = table / "data" / f"{info['run_ids'][0]}-deadbeef0000.parquet"
    fd = os.open(segment, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
    os.write(fd, b"PAR1" + b"\0" * 4096)  # no footer: a torn file
    os.close(fd)
    write_temp(table / "versions" / "000000" / "v000000000099.json", b'{"format": "efsray-res')
    os.kill(os.getpid(), signal.SIGKILL)


def fail_symbol_b(event: str, info: Mapping[str, Any]) -> None:
    """Every task of symbol B fails with an error that no retry can fix."""
    if event == "task_start" and str(info["task"]).startswith("B."):
        raise InvalidDataError("symbol B is broken on purpose")


def storage_error_once(event: str, info: Mapping[str, Any]) -> None:
    """The first attempt of one task hits a storage error (retryable); the retry works."""
    if event == "task_start" and info["attempt"] == 0 and _claim(info["root"], "eio", info):
        raise StorageError(5, "EIO on purpose (a flaky mount)", info["root"])


_batches = itertools.count(1)  # batches this process was about to commit (over all tasks)


def kill_at_batch(event: str, info: Mapping[str, Any]) -> None:
    """SIGKILL this process just before it commits its Nth batch, counted over every task
    it runs, N from the environment (EFSRAY_TEST_KILL_AT_BATCH): the kill lands on the
    worker's committer thread while its other task computes or waits for its commits."""
    if event == "before_save" and next(_batches) == int(os.environ["EFSRAY_TEST_KILL_AT_BATCH"]):
        os.kill(os.getpid(), signal.SIGKILL)


def note_thread(event: str, info: Mapping[str, Any]) -> None:
    """Append the name of the thread that commits each batch to <root>/../threads."""
    if event == "before_save":
        import threading

        with open(Path(info["root"]).parent / "threads", "a") as f:
            f.write(threading.current_thread().name + "\n")
