"""A hung mount: health answers "hung" within the deadline, "healthy" after, nothing left behind.

One test body, two FUSE filesystems whose operations block until released: efsray's own
simulator (``efsray.simfs``, hang mode) and ``hangfs`` (tests/fixtures/hangfs.py, the minimal
stand-in written before the simulator was on main). On both, as on a hung hard NFS mount, a
process whose request the filesystem picked up stays in uninterruptible sleep (D state) even
after SIGKILL, until the request is answered.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from efsray.deadline import REAPER_PREFIX
from efsray.mount import EFSMountConfig, EFSMountManager, check_health
from tests.fixtures.fakemount import child_pids
from tests.fixtures.hangfs import HangFSProcess

pytestmark = pytest.mark.fuse

DEADLINE = 5.0  # the default of check_health, EFSMountManager and `efsray health`
SLACK = 0.25  # scheduler noise on a shared 2-core machine, beyond the deadline itself


@dataclass
class BlockingMount:
    """What the test needs from a filesystem that can be made to hang."""

    path: Path
    block: Callable[[], object]
    release: Callable[[], object]
    blocked_now: Callable[[], int]  # operations blocked right now
    stuck_pids: Callable[[], list[int]]  # processes that blocked (when the backend knows)


@pytest.fixture(params=["simfs", "hangfs"])
def blocking_mount(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlockingMount]:
    if request.param == "hangfs":
        server: HangFSProcess = request.getfixturevalue("hangfs")
        yield BlockingMount(
            server.path, server.block, server.release, server.waiting, server.waiters
        )
        return
    from efsray.simfs import SimFSConfig, SimFSProcess, fuse_unavailable_reason

    reason = fuse_unavailable_reason()
    if reason is not None:
        pytest.skip(f"needs FUSE: {reason}")
    (tmp_path / "mnt").mkdir()
    (tmp_path / "backing").mkdir()
    sim = SimFSProcess.start(SimFSConfig(mountpoint=tmp_path / "mnt", backing=tmp_path / "backing"))
    try:
        yield BlockingMount(
            sim.path,
            sim.control.hang,
            sim.control.release,
            lambda: sim.control.counters().hung_now,
            list,  # the simulator does not say who is blocked
        )
    finally:
        sim.stop()


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


def _join_reapers(timeout: float) -> None:
    """Wait (joining them) for efsray's threads that reap stuck probe processes."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        if thread.name.startswith(REAPER_PREFIX):
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), f"{thread.name} still waiting {timeout} s after release"


def test_hung_mount_is_reported_hung_within_the_deadline_then_healthy(
    blocking_mount: BlockingMount,
) -> None:
    mount = blocking_mount
    before = child_pids()
    assert check_health(mount.path).status == "healthy"

    mount.block()
    cli = _efsray_health(mount.path)  # concurrently: the CLI, the library, the seed's face
    started = time.monotonic()
    report = check_health(mount.path)
    elapsed = time.monotonic() - started
    seed = EFSMountManager(EFSMountConfig("127.0.0.1", str(mount.path))).check_mount_health()
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

    # Three checks, one operation stuck in the filesystem: the other probes waited on the
    # probe lock, where SIGKILL works, so a long outage cannot pile up unkillable probes.
    assert mount.blocked_now() == 1
    stuck = mount.stuck_pids()

    mount.release()
    healthy = check_health(mount.path)
    assert healthy.status == "healthy" and healthy.accessible, healthy
    cli = _efsray_health(mount.path)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert json.loads(out)["status"] == "healthy"

    assert mount.blocked_now() == 0
    _wait_exited(stuck, timeout=10)
    # Our own probe children (the stuck one included) are reaped by efsray's reaper threads.
    _join_reapers(timeout=10)
    assert not (child_pids() - before), child_pids() - before


def test_a_short_deadline_is_honoured(hangfs: HangFSProcess) -> None:
    hangfs.block()
    started = time.monotonic()
    report = check_health(hangfs.path, timeout=1.0)
    assert report.status == "hung"
    assert time.monotonic() - started < 1.0 + SLACK
    stuck = hangfs.waiters()
    assert len(stuck) == 1
    hangfs.release()
    assert check_health(hangfs.path, timeout=DEADLINE).status == "healthy"
    _wait_exited(stuck, timeout=10)
