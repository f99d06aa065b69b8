"""The exporter over real HTTP: names, labels, and values that follow the filesystem."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from efsray.monitor import EFSPerformanceMonitor, MonitorMetrics, ProbeConfig
from tests.fixtures.monitor import LENIENT, Scraper, escape_mount_point

SMALL = ProbeConfig(latency_samples=20, metadata_files=10, throughput_bytes=256 * 1024,
                    block_bytes=64 * 1024)  # fmt: skip
MiB = 1024 * 1024
DATA = Path(__file__).parent / "data" / "mountstats"


def collect(monitor: EFSPerformanceMonitor, metrics: MonitorMetrics) -> None:
    metrics.update(asyncio.run(monitor.collect()))


def test_healthz_says_starting_before_the_first_collection(exporter) -> None:
    _, scrape = exporter
    status, ctype, body = scrape.get("/healthz")
    assert status == 503 and ctype == "application/json"
    assert json.loads(body)["status"] == "starting"
    status, _, text = scrape.get("/metrics")
    assert status == 200 and "efsray_build_info" in text
    assert scrape.get("/nope")[0] == 404


def test_metrics_follow_the_filesystem(exporter, tmpfs_mount) -> None:
    metrics, scrape = exporter
    fs = tmpfs_mount(size="64m", nr_inodes=4096)
    monitor = EFSPerformanceMonitor([fs], config=SMALL, thresholds=LENIENT, timeout=60)
    m = str(fs)
    collect(monitor, metrics)
    assert scrape.value("efsray_filesystem_size_bytes", mountpoint=m) == 64 * MiB
    avail_before = scrape.value("efsray_filesystem_avail_bytes", mountpoint=m)
    files_before = scrape.value("efsray_filesystem_files_free", mountpoint=m)
    assert avail_before == 64 * MiB  # the probe's own files are gone
    assert scrape.value("efsray_mount_status", mountpoint=m, status="ok") == 1
    assert scrape.value("efsray_mount_status", mountpoint=m, status="hung") == 0
    assert scrape.value("efsray_mount_up", mountpoint=m) == 1
    assert scrape.value("efsray_probes_total", mountpoint=m, result="ok") == 1
    for op in ("read", "write", "fsync", "create", "stat", "rename", "unlink"):
        n = scrape.value(
            "efsray_probe_operation_duration_seconds_count", mountpoint=m, operation=op
        )
        assert n == (20 if op in ("read", "write", "fsync") else 10)
    p50 = scrape.value(
        "efsray_probe_latency_seconds", mountpoint=m, operation="read", quantile="0.5"
    )
    p99 = scrape.value(
        "efsray_probe_latency_seconds", mountpoint=m, operation="read", quantile="0.99"
    )
    assert 0 < p50 <= p99 < 1
    tput = scrape.value("efsray_probe_throughput_bytes_per_second", mountpoint=m, direction="write")
    assert tput > MiB  # any machine writes tmpfs faster than 1 MiB/s

    (fs / "payload").write_bytes(b"\0" * (16 * MiB))
    collect(monitor, metrics)
    assert scrape.value("efsray_filesystem_avail_bytes", mountpoint=m) == avail_before - 16 * MiB
    assert scrape.value("efsray_filesystem_used_bytes", mountpoint=m) == 16 * MiB
    assert scrape.value("efsray_filesystem_files_free", mountpoint=m) == files_before - 1
    assert scrape.value("efsray_probes_total", mountpoint=m, result="ok") == 2
    count = scrape.value("efsray_probe_operation_duration_seconds_count", mountpoint=m,
                         operation="fsync")  # fmt: skip
    assert count == 40


def test_low_free_space_degrades_then_fails_and_healthz_says_so(exporter, tmpfs_mount) -> None:
    metrics, scrape = exporter
    fs = tmpfs_mount(size="64m", nr_inodes=4096)
    thresholds = dataclasses.replace(LENIENT, free_degraded_percent=10, free_failing_percent=2)
    monitor = EFSPerformanceMonitor([fs], config=SMALL, thresholds=thresholds, timeout=60)
    m = str(fs)
    (fs / "fill").write_bytes(b"\0" * (59 * MiB))  # 5 MiB = 7.8% free
    collect(monitor, metrics)
    assert scrape.value("efsray_mount_status", mountpoint=m, status="degraded") == 1
    assert scrape.value("efsray_mount_status_code", mountpoint=m) == 1
    status, _, body = scrape.get("/healthz")
    health = json.loads(body)
    assert status == 200 and health["status"] == "degraded"
    assert any("free space 7.8%" in r for r in health["reasons"])

    with open(fs / "fill", "ab") as f:
        f.write(b"\0" * (4 * MiB))  # 1 MiB = 1.6% free
    collect(monitor, metrics)
    assert scrape.value("efsray_mount_status", mountpoint=m, status="failing") == 1
    status, _, body = scrape.get("/healthz")
    assert status == 503 and json.loads(body)["mounts"][0]["status"] == "failing"


def test_nfs_counters_from_mountstats_are_exported_per_mount(exporter, tmp_path: Path) -> None:
    metrics, scrape = exporter
    data = tmp_path / "data"
    data.mkdir()
    capture = (DATA / "pcp-rhel8-kernel-4.18.0-105-rpc1.1.txt").read_text()
    # The real v3 mount of the capture, moved to where our data directory is.
    capture = capture.replace(" /mnt/nfsv3 ", f" {escape_mount_point(data)} ")
    stats = tmp_path / "mountstats"
    stats.write_text(capture)
    monitor = EFSPerformanceMonitor(
        [data], config=SMALL, thresholds=LENIENT, mountstats_path=stats, timeout=60
    )
    collect(monitor, metrics)
    m = str(data)
    ops = scrape.value("efsray_nfs_rpc_operations_total", mountpoint=m, operation="WRITE")
    assert ops == 16
    assert scrape.value("efsray_nfs_rpc_errors_total", mountpoint=m, operation="COMMIT") == 50
    rtt = scrape.value("efsray_nfs_rpc_rtt_seconds_total", mountpoint=m, operation="WRITE")
    assert rtt == pytest.approx(0.081)
    mean = scrape.value("efsray_nfs_rpc_mean_rtt_seconds", mountpoint=m, operation="WRITE")
    assert mean == pytest.approx(0.081 / 16)  # first reading: since the mount
    assert scrape.value("efsray_nfs_rpc_operations_total", mountpoint=m, operation="READ") is None
    assert scrape.value("efsray_nfs_server_write_bytes_total", mountpoint=m) == 1048576
    assert scrape.value("efsray_nfs_mount_age_seconds", mountpoint=m) == 88
    info = {
        dict(labels)["vers"]: v
        for (name, labels), v in scrape.samples().items()
        if name == "efsray_nfs_mount_info"
    }
    assert info == {"3": 1.0}

    # A later reading: 8 more WRITEs, 40 ms more on the wire.
    later = capture.replace(
        "WRITE: 16 16 0 2099456 2176 101 81 183 8", "WRITE: 24 25 0 3148032 3264 101 121 247 8"
    ).replace("\tage:\t88\n\tcaps:\tcaps=0x3fcf", "\tage:\t148\n\tcaps:\tcaps=0x3fcf")
    stats.write_text(later)
    collect(monitor, metrics)
    assert scrape.value("efsray_nfs_rpc_operations_total", mountpoint=m, operation="WRITE") == 24
    assert (
        scrape.value("efsray_nfs_rpc_retransmissions_total", mountpoint=m, operation="WRITE") == 1
    )
    mean = scrape.value("efsray_nfs_rpc_mean_rtt_seconds", mountpoint=m, operation="WRITE")
    assert mean == pytest.approx(0.040 / 8)
    # 1 retransmission in 8 calls is above the 1% threshold: degraded
    assert scrape.value("efsray_mount_status", mountpoint=m, status="degraded") == 1
    # a mount that is not NFS gets no nfs metrics
    assert not any(
        name.startswith("efsray_nfs") and dict(labels).get("mountpoint") != m
        for name, labels in scrape.samples()
    )


def test_openmetrics_is_served_when_asked(exporter, tmp_path: Path) -> None:
    import urllib.request

    metrics, scrape = exporter
    collect(EFSPerformanceMonitor([tmp_path], config=SMALL, timeout=60), metrics)
    req = urllib.request.Request(
        scrape.base_url + "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert f'efsray_mount_up{{mountpoint="{tmp_path}"}} 1.0' in body


def test_stale_collections_turn_health_failing(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    now = [1000.0]
    metrics = MonitorMetrics(CollectorRegistry(), stale_after=30, clock=lambda: now[0])
    metrics.update(
        asyncio.run(EFSPerformanceMonitor([tmp_path], config=SMALL, thresholds=LENIENT).collect())
    )
    assert metrics.health()[0] == 200
    now[0] += 31
    code, body = metrics.health()
    assert code == 503 and body["status"] == "failing"
    assert any("no collection for 31 s" in r for r in body["reasons"])


def test_two_exporters_in_one_process_do_not_share_state(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    a, b = CollectorRegistry(), CollectorRegistry()
    ma, _ = MonitorMetrics(a), MonitorMetrics(b)
    ma.update(
        asyncio.run(EFSPerformanceMonitor([tmp_path], config=SMALL, thresholds=LENIENT).collect())
    )
    assert str(tmp_path).encode() in generate_latest(a)
    assert str(tmp_path).encode() not in generate_latest(b)
    assert os.listdir(tmp_path) == []


def test_scraper_fixture_reads_labels(exporter) -> None:
    _, scrape = exporter
    assert isinstance(scrape, Scraper)
    from efsray import __version__

    assert scrape.value("efsray_build_info", version=__version__) == 1


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (Debian package 'prometheus', in .ci/apt-packages.txt)",
)
def test_promtool_checks_live_metrics(exporter, tmp_path: Path) -> None:
    """Prometheus' own linter accepts a live scrape: no gauge carries a quantile label (the
    latency quantiles are a summary), names and units follow the conventions."""
    metrics, scrape = exporter
    monitor = EFSPerformanceMonitor([tmp_path], config=SMALL, thresholds=LENIENT, timeout=60)
    collect(monitor, metrics)
    collect(monitor, metrics)
    status, _, text = scrape.get("/metrics")
    assert status == 200
    m = str(tmp_path)
    p50 = scrape.value("efsray_probe_latency_seconds", mountpoint=m, operation="read",
                       quantile="0.5")  # fmt: skip
    count = scrape.value("efsray_probe_latency_seconds_count", mountpoint=m, operation="read")
    assert p50 > 0 and count == 40  # quantiles of the last probe, count of every probe
    assert "# TYPE efsray_probe_latency_seconds summary" in text
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
