"""A hung mount: health answers "hung" within the deadline, "healthy" after, nothing left behind.

The mount is hangfs (tests/fixtures/hangfs.py): a FUSE filesystem whose operations block until
released. As on a hung hard NFS mount, a process whose request it picked up stays in
uninterruptible sleep (D state) even after SIGKILL, until the request is answered.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from efsray.mount import EFSMountConfig, EFSMountManager, check_health
from tests.fixtures.fakemount import child_pids
from tests.fixtures.hangfs import HangFSProcess

pytestmark = pytest.mark.fuse

DEADLINE = 5.0  # the default of check_health, EFSMountManager and `efsray health`
SLACK = 0.25  # scheduler noise on a shared 2-core machine, beyond the deadline itself


def _efsray_health(path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "efsray.cli.app", "health", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "EFS_MOUNT_PATH": str(path)},
    )


def _wait_exited(pids: list[int], timeout: float) -> None:
    """Wait (on pidfds, no polling) until every pid has exited; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue  # already gone
        try:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"probe process {pid} still running {timeout} s after the release"
        finally:
            os.close(fd)


def _wait_no_new_children(before: set[int], timeout: float) -> set[int]:
    """Our exited children are reaped by efsray's reaper threads: wait until they have been."""
    deadline = time.monotonic() + timeout
    while (left := child_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.02)  # a bounded wait on the condition "reaped", not a synchronisation
    return left


def test_hung_mount_is_reported_hung_within_the_deadline_then_healthy(
    hangfs: HangFSProcess,
) -> None:
    before = child_pids()
    assert check_health(hangfs.path).status == "healthy"

    hangfs.block()
    cli = _efsray_health(hangfs.path)  # concurrently: CLI, library, seed face
    started = time.monotonic()
    report = check_health(hangfs.path)
    elapsed = time.monotonic() - started
    seed = EFSMountManager(EFSMountConfig("127.0.0.1", str(hangfs.path))).check_mount_health()
    out, err = cli.communicate(timeout=60)

    assert report.status == "hung", report
    assert report.exit_code == 6 and not report.accessible
    assert elapsed < DEADLINE + SLACK, f"answered after {elapsed:.2f} s"
    assert "hung" in (report.error or "")
    assert seed["status"] == "hung" and seed["accessible"] is False and seed["error"]
    assert seed["elapsed_ms"] < (DEADLINE + SLACK) * 1000
    assert cli.returncode == 6, err
    cli_report = json.loads(out)
    assert cli_report["status"] == "hung"
    assert cli_report["elapsed_ms"] < (DEADLINE + SLACK) * 1000
    assert "Traceback" not in err

    # Three checks, one process stuck in the filesystem: the others waited on the probe lock,
    # where SIGKILL works, so a long outage cannot pile up unkillable probes.
    stuck = hangfs.waiters()
    assert len(stuck) == 1, stuck

    hangfs.release()
    healthy = check_health(hangfs.path)
    assert healthy.status == "healthy" and healthy.accessible, healthy
    cli = _efsray_health(hangfs.path)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert json.loads(out)["status"] == "healthy"

    _wait_exited(stuck, timeout=10)
    assert _wait_no_new_children(before, timeout=10) == set()


def test_a_short_deadline_is_honoured(hangfs: HangFSProcess) -> None:
    hangfs.block()
    started = time.monotonic()
    report = check_health(hangfs.path, timeout=1.0)
    assert report.status == "hung"
    assert time.monotonic() - started < 1.0 + SLACK
    stuck = hangfs.waiters()
    hangfs.release()
    assert check_health(hangfs.path, timeout=DEADLINE).status == "healthy"
    _wait_exited(stuck, timeout=10)
