"""check_mount_health on real directories (the hung case is in test_mount_hung.py)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from efsray.mount import HEALTH_EXIT_CODES, check_health
from efsray.mount._probe import PREFIX, STALE_AFTER_S
from tests.fixtures.fakemount import child_pids


def test_healthy_directory_reports_times_and_space(tmp_path: Path) -> None:
    before = child_pids()
    report = check_health(tmp_path, timeout=30)
    assert report.status == "healthy" and report.healthy and report.exit_code == 0
    assert report.accessible
    for name in ("write_time_ms", "fsync_time_ms", "read_time_ms", "delete_time_ms"):
        value = getattr(report, name)
        assert isinstance(value, float) and value >= 0, name
    assert report.total_bytes and report.total_bytes >= (report.free_bytes or 0) > 0
    assert 0 <= (report.used_percent or 0) <= 100
    assert report.fs_type  # from /proc/self/mountinfo, without touching the mount
    assert report.error is None
    assert list(tmp_path.iterdir()) == []  # the probe cleaned up after itself
    assert child_pids() - before == set()


def test_seed_dict_shape(tmp_path: Path) -> None:
    d = check_health(tmp_path, timeout=30).as_dict()
    assert list(d)[:5] == ["status", "write_time_ms", "read_time_ms", "mount_path", "accessible"]
    assert "error" not in d and "fsync_time_ms" in d and "free_bytes" in d
    failed = check_health(tmp_path / "missing", timeout=30).as_dict()
    assert failed["status"] == "error" and failed["accessible"] is False
    assert "not a directory" in failed["error"]


def test_not_a_directory_is_an_error(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    report = check_health(afile, timeout=30)
    assert report.status == "error" and report.exit_code == HEALTH_EXIT_CODES["error"] == 1
    assert str(afile) in (report.error or "")


def test_stale_probe_files_of_this_host_are_removed(tmp_path: Path) -> None:
    host = socket.gethostname().replace("/", "_")[:40]
    stale = tmp_path / f"{PREFIX}{host}-1-dead"
    fresh = tmp_path / f"{PREFIX}{host}-2-live"
    other = tmp_path / f"{PREFIX}otherhost-3-dead"
    for path in (stale, fresh, other):
        path.write_bytes(b"x")
    old = time.time() - STALE_AFTER_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert check_health(tmp_path, timeout=30).healthy
    assert not stale.exists()
    assert fresh.exists() and other.exists()  # another host's probe may still be running


def test_invalid_timeout() -> None:
    with pytest.raises(ValueError, match="timeout"):
        check_health("/", timeout=0)


def test_exit_codes_are_distinct_and_docker_safe() -> None:
    assert HEALTH_EXIT_CODES["healthy"] == 0
    assert len(set(HEALTH_EXIT_CODES.values())) == 3
    assert 2 not in HEALTH_EXIT_CODES.values()  # Docker reserves 2
