"""``efsray bench`` and ``efsray monitor`` as real processes."""

from __future__ import annotations

import json
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from efsray.monitor.probes import PROBE_PREFIX
from tests.fixtures.monitor import LENIENT_ENV, Scraper, efsray_env


@pytest.fixture(autouse=True)
def _lenient_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    for var, value in LENIENT_ENV.items():
        monkeypatch.setenv(var, value)


SMALL = ["--samples", "10", "--metadata-files", "5", "--file-size", "256K", "--block-size", "64K"]


def efsray(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", *args],
        capture_output=True, text=True, timeout=120, env=efsray_env(), **kw,
    )  # fmt: skip


def leftovers(path: Path) -> list[str]:
    return [p.name for p in path.iterdir() if p.name.startswith(PROBE_PREFIX)]


def test_bench_json(tmp_path: Path) -> None:
    proc = efsray("bench", str(tmp_path), "--json", *SMALL)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["status"] == "ok" and report["mount_path"] == str(tmp_path)
    m = report["metrics"]
    assert m["latency_samples"] == 10 and m["metadata_files"] == 5
    assert m["throughput_bytes"] == 256 * 1024 and m["block_bytes"] == 64 * 1024
    for key in ("read_latency_ms", "write_latency_ms", "read_throughput_mbps", "disk_free_gb"):
        assert m[key] > 0
    assert m["timestamp"].endswith("+00:00")
    assert leftovers(tmp_path) == []


def test_bench_table(tmp_path: Path) -> None:
    proc = efsray("bench", str(tmp_path), *SMALL, "--direct", "never")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("ok", "latency, ms", "p99", "fsync", "rename", "MiB/s", "inodes", "fadvise"):
        assert needle in out, out


def test_bench_exit_codes_follow_status(tmp_path: Path) -> None:
    proc = efsray("bench", str(tmp_path / "missing"), *SMALL)
    assert proc.returncode == 11  # failing
    assert "ENOENT" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    proc = efsray("bench", str(tmp_path), "--block-size", "1000")
    assert proc.returncode == 2 and "EFSRAY_MONITOR_BLOCK_BYTES" in proc.stderr
    proc = efsray("bench", str(tmp_path), *SMALL, "--timeout", "0.001")
    assert proc.returncode == 12  # hung: the child could not even start in 1 ms
    assert leftovers(tmp_path) == []


def test_monitor_serves_metrics_and_stops_cleanly_on_sigterm(
    tmp_path: Path, monitor_service
) -> None:
    svc = monitor_service("--interval", "0.5", "--json", str(tmp_path))
    listening = json.loads(svc.line())
    assert listening["event"] == "listening" and listening["mounts"] == [str(tmp_path)]
    url = listening["url"]
    first = json.loads(svc.line())  # the first collection, as JSON
    assert first["event"] == "collection" and first["mounts"][0]["status"] == "ok"
    json.loads(svc.line())  # a second collection: the interval works
    scrape = Scraper(url)
    assert scrape.value("efsray_mount_up", mountpoint=str(tmp_path)) == 1
    assert scrape.value("efsray_probes_total", mountpoint=str(tmp_path), result="ok") >= 2
    assert scrape.value("process_resident_memory_bytes") > 0  # process collector on
    status, _, body = scrape.get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"

    assert svc.stop() == 0
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the port is released
    assert leftovers(tmp_path) == []


def test_sigterm_during_a_probe_kills_it_and_leaves_no_files(
    tmp_path: Path, monitor_service, monkeypatch
) -> None:
    monkeypatch.setenv("EFSRAY_MONITOR_METADATA_FILES", "100000")  # a probe of many seconds
    svc = monitor_service("--interval", "60", str(tmp_path))
    assert svc.line().startswith("listening on http://127.0.0.1:")
    deadline = time.monotonic() + 30
    while not leftovers(tmp_path):  # wait for the probe to be running
        assert time.monotonic() < deadline, "the probe never started"
        assert svc.proc.poll() is None, svc.stderr_now()
        select.select([], [], [], 0.02)
    t0 = time.monotonic()
    assert svc.stop() == 0
    assert time.monotonic() - t0 < 10
    assert leftovers(tmp_path) == []
    stderr = svc.stderr_now()
    assert "killed 1 running probe" in stderr and "removed 1 probe dir" in stderr, stderr


def test_monitor_refuses_a_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = efsray("monitor", "--port", str(port), str(tmp_path))
    assert proc.returncode == 2
    assert f"127.0.0.1:{port}" in proc.stderr and "--port" in proc.stderr
