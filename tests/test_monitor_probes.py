"""The probe on real filesystems: what it measures, that it leaves nothing, how it cleans up."""

from __future__ import annotations

import concurrent.futures
import math
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from efsray.deadline import run_in_child
from efsray.errors import DeadlineExceeded
from efsray.monitor import EFSPerformanceMonitor, ProbeConfig, Status
from efsray.monitor.probes import (
    PROBE_PREFIX,
    cleanup_stale_probes,
    drop_page_cache,
    probe_dir_name,
    run_probe,
)
from tests.fixtures.monitor import LENIENT

SMALL = {"latency_samples": 20, "metadata_files": 10, "throughput_bytes": 1 << 20}


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith(PROBE_PREFIX))


def test_probe_measures_everything_and_leaves_no_files(tmp_path: Path) -> None:
    (tmp_path / "user-data").write_text("keep me")
    result = run_probe(str(tmp_path), **SMALL, block_bytes=256 * 1024)
    assert sorted(os.listdir(tmp_path)) == ["user-data"]
    samples = result["samples"]
    assert {k: len(v) for k, v in samples.items()} == {
        "write": 20, "fsync": 20, "read": 20, "create": 10, "stat": 10, "rename": 10, "unlink": 10,
    }  # fmt: skip
    assert all(0 < x < 30 for values in samples.values() for x in values)
    tp = result["throughput"]
    assert tp["bytes"] == 1 << 20 and tp["block_bytes"] == 256 * 1024
    assert tp["write_seconds"] > 0 and tp["read_seconds"] > 0
    space = result["space"]
    st = os.statvfs(tmp_path)
    assert space["total_bytes"] == st.f_blocks * st.f_frsize
    assert space["inodes_total"] == st.f_files
    assert result["direct_io"] is True  # ext4 and tmpfs (Linux >= 6.6) take O_DIRECT


def test_parts_set_to_zero_are_skipped(tmp_path: Path) -> None:
    result = run_probe(str(tmp_path), latency_samples=0, metadata_files=0, throughput_bytes=0)
    assert all(v == [] for v in result["samples"].values())
    assert "write_seconds" not in result["throughput"]
    assert leftovers(tmp_path) == []


def test_buffered_mode_drops_the_page_cache_before_reading(tmp_path: Path) -> None:
    if shutil.which("fincore") is None:
        pytest.skip("fincore (util-linux) is not installed")
    path = tmp_path / "f"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.write(fd, os.urandom(1 << 20))
        os.fsync(fd)
        os.pread(fd, 1 << 20, 0)

        def resident() -> int:
            out = subprocess.run(
                ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            return int(out.stdout.strip())

        assert resident() == 1 << 20
        drop_page_cache(fd)
        assert resident() == 0
    finally:
        os.close(fd)
    result = run_probe(str(tmp_path), **SMALL, direct_io="never")
    assert result["direct_io"] is False
    assert len(result["samples"]["read"]) == 20


def test_monitor_probe_runs_in_a_child_and_reports_ok(tmp_path: Path) -> None:
    monitor = EFSPerformanceMonitor(
        [tmp_path], config=ProbeConfig(**SMALL), thresholds=LENIENT, timeout=60
    )
    report = monitor.probe(tmp_path)
    assert report.status is Status.OK, report.reasons
    m = report.metrics
    assert m is not None and m.mount_path == str(tmp_path)
    assert m.timestamp.utcoffset() is not None and m.timestamp.utcoffset().total_seconds() == 0
    assert m.read_latency_ms == m.read_latency_p50_ms
    assert m.read_latency_p50_ms <= m.read_latency_p95_ms <= m.read_latency_p99_ms
    assert m.write_throughput_mbps > 0 and m.read_throughput_mbps > 0
    assert m.disk_total_bytes > m.disk_free_bytes > 0
    assert m.disk_free_gb == pytest.approx(m.disk_free_bytes / 1024**3)
    assert math.isfinite(m.metadata_ops_per_second)
    assert len(report.samples["fsync"]) == 20
    assert leftovers(tmp_path) == []


def test_unreachable_path_is_failing_with_a_reason(tmp_path: Path) -> None:
    missing = tmp_path / "not-mounted"
    monitor = EFSPerformanceMonitor([missing], config=ProbeConfig(**SMALL), timeout=60)
    report = monitor.probe(missing)
    assert report.status is Status.FAILING and report.metrics is None
    assert "ENOENT" in (report.error or "") and str(missing) in (report.error or "")


def test_a_probe_killed_mid_run_leaves_a_directory_the_next_probe_removes(
    tmp_path: Path,
) -> None:
    heavy = ProbeConfig(latency_samples=0, metadata_files=1_000_000, throughput_bytes=0)
    killer = EFSPerformanceMonitor([tmp_path], config=heavy, thresholds=LENIENT, timeout=120)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(killer.probe, tmp_path)
        deadline = time.monotonic() + 60
        while not (left := leftovers(tmp_path)) or not (tmp_path / left[0] / "m000000").exists():
            assert time.monotonic() < deadline and not running.done(), "the probe never wrote"
            select.select([], [], [], 0.01)
        assert killer.cancel_probes() == 1  # SIGKILL, mid-way through creating files
        report = running.result(timeout=30)
    assert report.status is Status.FAILING and "without an answer" in (report.error or "")
    (left,) = leftovers(tmp_path)
    assert left.rsplit("-", 2)[0] == probe_dir_name().rsplit("-", 2)[0]  # this host's
    assert any((tmp_path / left).iterdir())  # killed with files in it
    monitor = EFSPerformanceMonitor(
        [tmp_path], config=ProbeConfig(**SMALL), thresholds=LENIENT, timeout=60
    )
    assert monitor.probe(tmp_path).status is Status.OK
    assert leftovers(tmp_path) == []


def test_a_probe_past_its_deadline_is_hung(tmp_path: Path) -> None:
    with pytest.raises(DeadlineExceeded):
        run_in_child("efsray.monitor.probes:run_probe", {"path": str(tmp_path)}, timeout=0.01)
    slow = EFSPerformanceMonitor([tmp_path], config=ProbeConfig(**SMALL), timeout=0.01)
    report = slow.probe(tmp_path)
    assert report.status is Status.HUNG and report.metrics is None
    assert "did not finish within 0.01 s" in report.reasons[0]


def test_stale_cleanup_spares_live_and_recent_probes_of_other_hosts(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname()
    ours_dead = tmp_path / probe_dir_name(here, dead.pid)
    ours_alive = tmp_path / probe_dir_name(here, os.getpid())
    other_recent = tmp_path / probe_dir_name("other-host", 12345)
    other_old = tmp_path / probe_dir_name("other-host", 23456)
    odd_old = tmp_path / f"{PROBE_PREFIX}not-a-probe-name"
    unrelated = tmp_path / "efsray-probe-looking-but-no-dot"
    for d in (ours_dead, ours_alive, other_recent, other_old, odd_old, unrelated):
        d.mkdir()
        (d / "latency").write_bytes(b"x" * 4096)
    an_hour_ago = time.time() - 3700
    for d in (other_old, odd_old):
        os.utime(d, (an_hour_ago, an_hour_ago))
    removed = cleanup_stale_probes(str(tmp_path), stale_after=3600)
    assert removed == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [ours_alive.name, other_recent.name, unrelated.name]
    )


def test_probe_config_is_validated() -> None:
    with pytest.raises(ValueError, match="multiple of 4096"):
        ProbeConfig(block_bytes=1000)
    with pytest.raises(ValueError, match="negative"):
        ProbeConfig(latency_samples=-1)
    with pytest.raises(ValueError, match="direct_io"):
        ProbeConfig(direct_io="sometimes")
    with pytest.raises(TypeError, match="list of paths"):
        EFSPerformanceMonitor("/mnt/efs")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        EFSPerformanceMonitor([])


def test_seed_api_collects_metrics_and_logs_failed_mounts(tmp_path: Path, caplog) -> None:
    import asyncio

    from efsray import EFSPerformanceMetrics as Exported
    from efsray import EFSPerformanceMonitor as ExportedMonitor

    good, missing = tmp_path / "good", tmp_path / "missing"
    good.mkdir()
    monitor = ExportedMonitor([str(good), str(missing)])  # the seed's call: a list of str
    monitor.config, monitor.thresholds = ProbeConfig(**SMALL), LENIENT
    with caplog.at_level("ERROR", logger="efsray.monitor"):
        metrics = asyncio.run(monitor.collect_efs_metrics())
    (m,) = metrics
    assert isinstance(m, Exported) and m.mount_path == str(good)
    for name in ("read_latency_ms", "write_latency_ms", "disk_usage_gb", "disk_free_gb",
                 "read_throughput_mbps", "write_throughput_mbps"):  # fmt: skip
        assert getattr(m, name) > 0, name
    assert f"Failed to collect metrics for {missing}" in caplog.text and "ENOENT" in caplog.text
