"""The monitor on a simulated EFS (FUSE, efsray.simfs): known latency, hangs, I/O errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from efsray.monitor import EFSPerformanceMonitor, ProbeConfig, Status, percentile
from efsray.monitor.probes import PROBE_PREFIX
from tests.fixtures.monitor import LENIENT, LENIENT_ENV, Scraper

pytestmark = pytest.mark.fuse

MS = 1e-3
# Latency added by the filesystem per operation, and what the probe must then report.
ADDED = {"read": 2 * MS, "fsync": 6 * MS}
# Tolerance of the move of a median (with minus without the added latency): the added sleep
# inside the FUSE handler never returns early, so no sample is below it, but the baseline is
# itself noisy (-0.5 ms), and scheduling on a shared 2-core machine, where the Python FUSE
# server and the probe compete, can stretch a delay (+2 ms).
BELOW, ABOVE = 0.5 * MS, 2.0 * MS


def leftovers(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if p.name.startswith(PROBE_PREFIX)]


def test_latency_percentiles_reflect_the_added_latency(simfs_factory, exporter) -> None:
    sim = simfs_factory(profile="none")
    metrics, scrape = exporter
    config = ProbeConfig(latency_samples=30, metadata_files=0, throughput_bytes=0)
    monitor = EFSPerformanceMonitor([sim.path], config=config, thresholds=LENIENT, timeout=120)
    # Probes with and without the added latency, interleaved, so that the load other users put
    # on this shared machine falls on both alike.
    base: dict[str, list[float]] = {"read": [], "write": [], "fsync": []}
    slow: dict[str, list[float]] = {"read": [], "write": [], "fsync": []}
    for _ in range(3):
        sim.control.set_profile("none")
        report = monitor.probe(sim.path)
        assert report.metrics is not None, report.error
        for op in base:
            base[op] += report.samples[op]
        sim.control.set_profile("none", read=ADDED["read"], fsync=ADDED["fsync"])
        sim.control.reset()
        report = monitor.probe(sim.path)
        assert report.metrics is not None, report.error
        counts = sim.control.counters()
        assert counts["read"] >= 30 and counts["fsync"] >= 60  # a FUSE call per sample, at least
        for op in slow:
            slow[op] += report.samples[op]
    last = report

    def p(values: list[float], q: float) -> float:
        return percentile(values, q)

    # Reads: each sample is one FUSE read (+2 ms), served from the backing file's page cache:
    # the median must move by the added 2 ms, within the tolerance.
    moved = p(slow["read"], 50) - p(base["read"], 50)
    assert ADDED["read"] - BELOW <= moved <= ADDED["read"] + ABOVE, moved
    # fsync samples are one FUSE fsync (+6 ms); write samples are write + fdatasync here
    # (simfs refuses O_DIRECT, so the probe falls back) and gain the same 6 ms. Both also
    # fsync the backing disk, which other users make noisy: the median must be at least the
    # added delay and at most the baseline's p95 plus the delay plus the tolerance.
    for op in ("fsync", "write"):
        ceiling = p(base[op], 95) + ADDED["fsync"] + ABOVE
        assert ADDED["fsync"] <= p(slow[op], 50) <= ceiling, (op, p(slow[op], 50), ceiling)
    for op, added in (("read", ADDED["read"]), ("fsync", ADDED["fsync"]),
                      ("write", ADDED["fsync"])):  # fmt: skip
        assert min(slow[op]) >= added  # no sample can beat the added delay
    assert last.metrics is not None and last.metrics.direct_io is False

    # ... and the exporter says the same over HTTP.
    metrics.update([last])
    m = str(sim.path)
    p50 = scrape.value("efsray_probe_latency_seconds", mountpoint=m, operation="read",
                       quantile="0.5")  # fmt: skip
    assert p50 == pytest.approx(last.metrics.read_latency_p50_ms * MS)
    assert p50 >= ADDED["read"]
    fast = scrape.value("efsray_probe_operation_duration_seconds_bucket", mountpoint=m,
                        operation="read", le="0.001")  # fmt: skip
    assert fast == 0  # no read under 1 ms once 2 ms are added
    assert leftovers(sim.backing) == []


def test_hung_mount_is_reported_while_metrics_keep_answering(
    simfs_factory, monitor_service, monkeypatch
) -> None:
    small = {"LATENCY_SAMPLES": "10", "METADATA_FILES": "5", "THROUGHPUT_BYTES": "256K",
             "BLOCK_BYTES": "64K"}  # fmt: skip
    for var, value in {
        **LENIENT_ENV,
        **{f"EFSRAY_MONITOR_{k}": v for k, v in small.items()},
    }.items():
        monkeypatch.setenv(var, value)
    sim = simfs_factory(profile="none")
    m = str(sim.path)
    svc = monitor_service("--interval", "0.5", "--timeout", "5", "--json", m)
    url = json.loads(svc.line())["url"]
    assert json.loads(svc.line())["mounts"][0]["status"] == "ok"
    scrape = Scraper(url)

    sim.control.hang()  # from now on every operation on the mount blocks
    sim.control.wait_hung(1, timeout=20)  # a probe is stuck in the filesystem
    deadline = time.monotonic() + 20
    while True:
        t0 = time.monotonic()
        status, _, body = scrape.get("/healthz", timeout=5)
        health = json.loads(body)
        samples = scrape.samples()
        assert time.monotonic() - t0 < 2.0  # answered from memory, not from the mount
        if health["status"] == "hung":
            break
        assert time.monotonic() < deadline, f"never reported hung: {health}"
        svc.line(timeout=10)  # wait for the next collection
    assert status == 503
    # Either this probe hit its deadline, or the one killed before is still stuck: killed
    # while blocked, a process still flushes its open files to the mount on exit.
    reason = health["mounts"][0]["reasons"][0]
    assert "did not finish within 5 s" in reason or "still blocked in the kernel" in reason
    key = ("efsray_mount_status", frozenset({("mountpoint", m), ("status", "hung")}))
    assert samples[key] == 1
    assert samples[("efsray_mount_up", frozenset({("mountpoint", m)}))] == 0
    hung = samples[("efsray_probes_total", frozenset({("mountpoint", m), ("result", "hung")}))]
    assert hung >= 1
    assert not any(name == "efsray_filesystem_avail_bytes" for name, _ in samples)  # no stale data

    sim.control.release()
    deadline = time.monotonic() + 30
    while json.loads(scrape.get("/healthz")[2])["status"] != "ok":
        assert time.monotonic() < deadline, "never recovered after the release"
        svc.line(timeout=10)
    assert scrape.value("efsray_mount_up", mountpoint=m) == 1
    assert svc.stop() == 0
    assert leftovers(sim.backing) == []  # the probes killed while hung left nothing behind


def test_io_errors_make_the_mount_failing(simfs_factory, exporter) -> None:
    sim = simfs_factory(profile="none")
    metrics, scrape = exporter
    config = ProbeConfig(latency_samples=10, metadata_files=5, throughput_bytes=64 * 1024,
                         block_bytes=64 * 1024)  # fmt: skip
    monitor = EFSPerformanceMonitor([sim.path], config=config, thresholds=LENIENT, timeout=60)
    sim.control.inject("EIO", ops="write", times=None)  # every write fails
    report = monitor.probe(sim.path)
    metrics.update([report])
    assert report.status is Status.FAILING and "[EIO]" in (report.error or "")
    status, _, body = scrape.get("/healthz")
    assert status == 503 and json.loads(body)["status"] == "failing"
    assert scrape.value("efsray_probes_total", mountpoint=str(sim.path), result="failed") == 1
    sim.control.clear_faults()
    report = monitor.probe(sim.path)
    metrics.update([report])
    assert report.status is Status.OK, report.reasons
    assert scrape.get("/healthz")[0] == 200
    assert leftovers(sim.backing) == []


def test_collecting_from_a_hung_mount_never_blocks_the_event_loop(simfs_factory) -> None:
    import asyncio

    sim = simfs_factory(profile="none")
    config = ProbeConfig(latency_samples=5, metadata_files=2, throughput_bytes=0)
    monitor = EFSPerformanceMonitor([sim.path], config=config, thresholds=LENIENT, timeout=3)
    sim.control.hang()

    async def main() -> tuple[list, float, float]:
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        t0 = time.monotonic()
        metrics = await monitor.collect_efs_metrics()
        took = time.monotonic() - t0
        done.set()
        await tick
        return metrics, took, max(gaps)

    try:
        metrics, took, worst_gap = asyncio.run(main())
    finally:
        sim.control.release()
    assert metrics == []  # the hung mount is left out (and logged), as in the seed
    assert 3 <= took < 3 + 5  # the deadline, plus the kill grace and slack
    assert worst_gap < 0.5  # the loop kept turning while the probe was stuck


def test_no_second_probe_is_started_while_one_is_stuck(simfs_factory) -> None:
    import concurrent.futures

    sim = simfs_factory(profile="none")
    config = ProbeConfig(latency_samples=5, metadata_files=2, throughput_bytes=0)
    first = EFSPerformanceMonitor([sim.path], config=config, thresholds=LENIENT, timeout=60)
    second = EFSPerformanceMonitor([sim.path], config=config, thresholds=LENIENT, timeout=60)
    sim.control.hang()
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            stuck = pool.submit(first.probe, sim.path)
            sim.control.wait_hung(1, timeout=20)  # the first probe's child is blocked
            t0 = time.monotonic()
            report = second.probe(sim.path)
            assert time.monotonic() - t0 < 5  # answered at once, no second child spawned
            assert report.status is Status.HUNG
            assert "still blocked in the kernel" in (report.error or "")
            assert sim.control.counters().hung_now == 1
            sim.control.release()
            assert stuck.result(timeout=60).status is Status.OK
    finally:
        sim.control.release()
    assert second.probe(sim.path).status is Status.OK  # once it is gone, probing resumes


def test_efsray_bench_on_a_hung_mount_exits_hung_within_the_deadline(simfs_factory) -> None:
    import subprocess
    import sys

    from tests.fixtures.monitor import efsray_env

    sim = simfs_factory(profile="none")
    sim.control.hang()
    try:
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "efsray.cli.app", "bench", str(sim.path), "--timeout", "1",
             "--json"],
            capture_output=True, text=True, timeout=60, env=efsray_env(),
        )  # fmt: skip
        took = time.monotonic() - t0
    finally:
        sim.control.release()
    assert proc.returncode == 12, proc.stderr  # hung
    assert json.loads(proc.stdout)["status"] == "hung"
    assert took < 1 + 10  # the deadline, plus interpreter start-up and the kill grace
