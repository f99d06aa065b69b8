"""Thresholds -> status, percentiles, the metrics record, and the EFSRAY_MONITOR_* settings."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.config import load_settings, parse_size
from efsray.errors import ConfigError
from efsray.monitor import (
    EFSPerformanceMetrics,
    EFSPerformanceMonitor,
    OpInterval,
    Status,
    Thresholds,
    evaluate,
    percentile,
    worst,
)

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def metrics(p99_ms: float = 2.0, free: int = 50, total: int = 100, **kw) -> EFSPerformanceMetrics:
    fields = {f"{op}_latency_p99_ms": p99_ms for op in ("read", "write", "fsync")}
    fields.update(kw)
    return EFSPerformanceMetrics(
        mount_path="/mnt/efs", read_latency_ms=1.0, write_latency_ms=2.0, disk_usage_gb=1.0,
        disk_free_gb=1.0, read_throughput_mbps=100.0, write_throughput_mbps=90.0, timestamp=NOW,
        disk_total_bytes=total, disk_free_bytes=free, inodes_total=total, inodes_free=free,
        **fields,
    )  # fmt: skip


def test_seed_fields_construct_positionally_with_aware_utc_time() -> None:
    m = EFSPerformanceMetrics("/mnt/efs", 1.0, 2.7, 10.0, 100.0, 300.0, 120.0, NOW)
    assert m.read_latency_ms == 1.0 and math.isnan(m.read_latency_p99_ms)
    with pytest.raises(ValueError, match="no time zone"):
        EFSPerformanceMetrics(
            "/mnt/efs", 1.0, 2.7, 10.0, 100.0, 300.0, 120.0, dt.datetime(2025, 1, 1)
        )
    with pytest.raises(AttributeError):
        m.read_latency_ms = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kw", "expected", "needle"),
    [
        ({}, Status.OK, None),
        ({"p99_ms": 60}, Status.DEGRADED, "p99 60.0 ms > 50 ms"),
        ({"p99_ms": 1500}, Status.FAILING, "> 1000 ms"),
        ({"free": 9}, Status.DEGRADED, "free space 9.0% < 10%"),
        ({"free": 1}, Status.FAILING, "free space 1.0% < 2%"),
        ({"free": 0, "total": 0}, Status.OK, None),  # not reported (FUSE): not judged
        ({"fsync_latency_p99_ms": float("nan")}, Status.OK, None),
    ],
)
def test_thresholds(kw: dict, expected: Status, needle: str | None) -> None:
    status, reasons = evaluate(metrics(**kw), Thresholds())
    assert status is expected
    if needle:
        assert any(needle in r for r in reasons), reasons


def test_nfs_retransmissions_and_timeouts_degrade() -> None:
    quiet = {"READ": OpInterval(1000, 0, 0, 0, 0.001, 0.001, 0.0)}
    noisy = {"READ": OpInterval(1000, 20, 0, 0, 0.001, 0.001, 0.0)}
    timeouts = {"WRITE": OpInterval(10, 0, 1, 0, 0.003, 0.004, 0.0)}
    assert evaluate(metrics(), Thresholds(), quiet)[0] is Status.OK
    status, reasons = evaluate(metrics(), Thresholds(), noisy)
    assert status is Status.DEGRADED and "retransmitted 20 of 1000" in reasons[0]
    assert evaluate(metrics(), Thresholds(), timeouts)[0] is Status.DEGRADED


@given(
    a=st.floats(0.001, 1e5, allow_nan=False),
    b=st.floats(0.001, 1e5, allow_nan=False),
    free_a=st.integers(0, 100),
    free_b=st.integers(0, 100),
)
@settings(max_examples=200, deadline=None)
def test_worse_numbers_never_give_a_better_status(a, b, free_a, free_b) -> None:
    """Monotone: more latency or less free space can only keep or worsen the status."""
    lo, hi = sorted((a, b))
    more_free, less_free = max(free_a, free_b), min(free_a, free_b)
    better = evaluate(metrics(p99_ms=lo, free=more_free), Thresholds())[0]
    worse = evaluate(metrics(p99_ms=hi, free=less_free), Thresholds())[0]
    assert worse.severity >= better.severity


def test_status_exit_codes_health_and_worst() -> None:
    assert [s.exit_code for s in Status] == [0, 10, 11, 12]
    assert [s.healthy for s in Status] == [True, True, False, False]
    assert worst([Status.OK, Status.HUNG, Status.DEGRADED]) is Status.HUNG
    assert worst([]) is Status.OK
    with pytest.raises(ValueError, match="degraded"):
        Thresholds(latency_degraded_ms=100, latency_failing_ms=10)
    with pytest.raises(ValueError, match="failing"):
        Thresholds(free_degraded_percent=1, free_failing_percent=5)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=200),
       st.floats(0, 100))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), abs=1e-6)


def test_percentile_edges() -> None:
    assert math.isnan(percentile([], 50))
    assert percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# --- settings -----------------------------------------------------------------------------


def test_monitor_settings_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("EFSRAY_MONITOR_MOUNT_PATHS", f"{tmp_path}/a, {tmp_path}/b ,")
    monkeypatch.setenv("EFSRAY_MONITOR_THROUGHPUT_BYTES", "64M")
    monkeypatch.setenv("EFSRAY_MONITOR_BLOCK_BYTES", "256k")
    monkeypatch.setenv("EFSRAY_MONITOR_LATENCY_FAILING_MS", "250")
    monkeypatch.setenv("EFSRAY_MONITOR_PROBE_TIMEOUT", "7.5")
    s = load_settings()
    assert s.monitor_mount_paths == (tmp_path / "a", tmp_path / "b")
    monitor = EFSPerformanceMonitor.from_settings(s)
    assert monitor.mount_paths == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert monitor.config.throughput_bytes == 64 << 20 and monitor.config.block_bytes == 256 << 10
    assert monitor.thresholds.latency_failing_ms == 250 and monitor.timeout == 7.5


def test_monitor_paths_default_to_the_store_root(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("EFS_MOUNT_PATH", str(tmp_path))
    assert load_settings().monitor_mount_paths == (tmp_path,)


@pytest.mark.parametrize(
    ("var", "value", "needle"),
    [
        ("EFSRAY_MONITOR_BLOCK_BYTES", "1000", "EFSRAY_MONITOR_BLOCK_BYTES"),
        ("EFSRAY_MONITOR_THROUGHPUT_BYTES", "10000", "multiple of 4096"),
        ("EFSRAY_MONITOR_THROUGHPUT_BYTES", "lots", "not a size"),
        ("EFSRAY_MONITOR_PORT", "70000", "EFSRAY_MONITOR_PORT"),
        ("EFSRAY_MONITOR_INTERVAL", "0", "EFSRAY_MONITOR_INTERVAL"),
        ("EFSRAY_MONITOR_LATENCY_DEGRADED_MS", "5000", "degraded must be <= failing"),
        ("EFSRAY_MONITOR_FREE_FAILING_PERCENT", "50", "failing must be <= degraded"),
        ("EFSRAY_MONITOR_HOST", "not a host!", "EFSRAY_MONITOR_HOST"),
    ],
)
def test_bad_monitor_settings_name_the_variable(monkeypatch, var, value, needle) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=needle):
        load_settings()


@given(st.integers(0, 2**40), st.sampled_from(["", "k", "K", "m", "M", "g", "G", "t"]),
       st.sampled_from(["", "B", "iB"]))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_parse_size_property(n: int, unit: str, suffix: str) -> None:
    if not unit and suffix == "iB":
        suffix = "B"
    factor = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit.lower()]
    assert parse_size(f"{n}{unit}{suffix}") == n * factor


@given(st.text(max_size=12))
@settings(max_examples=200, deadline=None)
def test_parse_size_refuses_or_returns_a_non_negative_int(text: str) -> None:
    try:
        value = parse_size(text)
    except ValueError as exc:
        assert "size" in str(exc)
    else:
        assert isinstance(value, int) and value >= 0
