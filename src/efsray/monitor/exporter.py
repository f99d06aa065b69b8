"""Prometheus metrics and the HTTP server of ``/metrics`` and ``/healthz``.

:class:`MonitorMetrics` registers itself in the :class:`~prometheus_client.CollectorRegistry`
you pass in (never the global one) and serves the latest :class:`MountReport` per mount.
Scrapes read memory only, so ``/metrics`` answers while a mount is hung. All names follow
Prometheus conventions (base units, ``_total`` counters) and carry a ``mountpoint`` label,
as node_exporter's ``node_filesystem_*`` do, so the two join.

Per mount (``{mountpoint="/mnt/efs"}``)::

    efsray_mount_status{status="ok|degraded|failing|hung"}  1 for the current status, else 0
    efsray_mount_status_code                    0 ok, 1 degraded, 2 failing, 3 hung
    efsray_mount_up                             1 if the last probe completed
    efsray_filesystem_size_bytes / _avail_bytes / _used_bytes / _files / _files_free
    efsray_probe_latency_seconds{operation, quantile}        summary: p50/p95/p99 of the last
                                                             probe, _count/_sum of all probes
    efsray_probe_operation_duration_seconds{operation}       histogram of every timed call
    efsray_probe_throughput_bytes_per_second{direction}      sequential read / write
    efsray_probe_metadata_operations_per_second{operation}   create / stat / rename / unlink
    efsray_probe_direct_io                      1 if O_DIRECT kept the page cache out
    efsray_probe_duration_seconds               wall time of the last collection
    efsray_probe_last_success_timestamp_seconds
    efsray_probes_total{result="ok|failed|hung"}
    # NFS mounts only, from /proc/self/mountstats:
    efsray_nfs_rpc_operations_total{operation} / _retransmissions_total / _major_timeouts_total
    efsray_nfs_rpc_errors_total / _rtt_seconds_total / _execute_seconds_total / _queue_seconds_total
    efsray_nfs_rpc_mean_rtt_seconds{operation} / efsray_nfs_rpc_mean_execute_seconds{operation}
    efsray_nfs_server_read_bytes_total / efsray_nfs_server_write_bytes_total
    efsray_nfs_mount_age_seconds, efsray_nfs_mount_info{device, vers, proto, hard, ...}

And for the service: ``efsray_monitor_last_collection_timestamp_seconds``,
``efsray_monitor_collection_duration_seconds``, ``efsray_build_info{version}``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from efsray import __version__
from efsray.httpd import ServiceHTTPServer
from efsray.monitor.metrics import (
    LATENCY_OPERATIONS,
    METADATA_OPERATIONS,
    MIB,
    MountReport,
)
from efsray.monitor.status import Status, worst

__all__ = ["LATENCY_BUCKETS", "MetricsServer", "MonitorMetrics"]

logger = logging.getLogger("efsray.monitor")

# From 100 µs (a local SSD) through EFS's 1-3 ms to 10 s (a struggling mount).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_QUANTILES = (("0.5", 50), ("0.95", 95), ("0.99", 99))
_LABEL = "mountpoint"
_INFO_OPTIONS = ("vers", "proto", "rsize", "wsize", "timeo", "retrans", "sec")


class MonitorMetrics(Collector):
    """The latest reports as Prometheus metrics, and the JSON health summary.

    ``stale_after``: seconds without a new collection after which health turns failing
    (None: never). ``clock`` returns Unix time (injectable for tests).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.stale_after = stale_after
        self._reports: dict[str, MountReport] = {}
        self._last_success: dict[str, float] = {}
        self._last_collection: float | None = None
        self._collection_seconds: float | None = None
        self._latency_totals: dict[tuple[str, str], tuple[int, float]] = {}
        self._durations = Histogram(
            "efsray_probe_operation_duration_seconds",
            "Duration of each timed filesystem call of the probe, by operation.",
            [_LABEL, "operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._probes = Counter(
            "efsray_probes",
            "Probe runs by result: ok (measured), failed (an error) or hung (deadline).",
            [_LABEL, "result"],
            registry=registry,
        )
        registry.register(self)

    # --- updates -------------------------------------------------------------------------

    def update(
        self, reports: Sequence[MountReport], collection_seconds: float | None = None
    ) -> None:
        """Publish one collection (one report per mount)."""
        now = self._clock()
        with self._lock:
            for report in reports:
                self._reports[report.mount_path] = report
                if report.metrics is not None:
                    self._last_success[report.mount_path] = report.timestamp.timestamp()
            self._last_collection = now
            self._collection_seconds = collection_seconds
            for report in reports:
                for operation, values in report.samples.items():
                    key = (report.mount_path, operation)
                    count, total = self._latency_totals.get(key, (0, 0.0))
                    self._latency_totals[key] = (count + len(values), total + sum(values))
        for report in reports:
            for operation, values in report.samples.items():
                child = self._durations.labels(report.mount_path, operation)
                for value in values:
                    child.observe(value)
            if report.metrics is not None:
                result = "ok"
            elif report.status is Status.HUNG:
                result = "hung"
            else:
                result = "failed"
            self._probes.labels(report.mount_path, result).inc()

    def reports(self) -> list[MountReport]:
        with self._lock:
            return list(self._reports.values())

    # --- health --------------------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for ``/healthz``: 200 when ok or degraded, else 503."""
        now = self._clock()
        with self._lock:
            reports = list(self._reports.values())
            last_success = dict(self._last_success)
            last = self._last_collection
        if last is None:
            body: dict[str, Any] = {
                "status": "starting",
                "reasons": ["no collection has finished yet"],
                "mounts": [],
            }
            return 503, body
        status = worst(r.status for r in reports)
        reasons = [f"{r.mount_path}: {why}" for r in reports for why in r.reasons]
        age = now - last
        if self.stale_after is not None and age > self.stale_after:
            status = worst([status, Status.FAILING])
            reasons.append(f"no collection for {age:.0f} s (limit {self.stale_after:g} s)")
        body = {
            "status": status.value,
            "reasons": reasons,
            "last_collection_age_seconds": round(age, 3),
            "mounts": [
                {
                    "mount_path": r.mount_path,
                    "status": r.status.value,
                    "reasons": list(r.reasons),
                    "error": r.error,
                    "timestamp": r.timestamp.isoformat(),
                    "last_success_timestamp": last_success.get(r.mount_path),
                }
                for r in reports
            ],
            "version": __version__,
        }
        return (200 if status.healthy else 503), body

    # --- prometheus_client Collector ----------------------------------------------------

    def describe(self) -> Iterable[Metric]:
        return []  # names are dynamic per scrape; nothing to reserve

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            reports = list(self._reports.values())
            last_success = dict(self._last_success)
            last = self._last_collection
            took = self._collection_seconds
            totals = dict(self._latency_totals)
        yield from _mount_families(reports, last_success, totals)
        yield from _nfs_families(reports)
        build = GaugeMetricFamily("efsray_build_info", "efsray version.", labels=["version"])
        build.add_metric([__version__], 1)
        yield build
        if last is not None:
            yield GaugeMetricFamily(
                "efsray_monitor_last_collection_timestamp_seconds",
                "Unix time the last collection finished.",
                value=last,
            )
        if took is not None:
            yield GaugeMetricFamily(
                "efsray_monitor_collection_duration_seconds",
                "Wall time of the last collection of all mounts.",
                value=took,
            )


def _gauge(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=[_LABEL, *labels])


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _mount_families(
    reports: Sequence[MountReport],
    last_success: dict[str, float],
    latency_totals: dict[tuple[str, str], tuple[int, float]],
) -> Iterator[Metric]:
    status = _gauge("efsray_mount_status", "1 for the mount's current status.", ["status"])
    code = _gauge("efsray_mount_status_code", "0 ok, 1 degraded, 2 failing, 3 hung.")
    up = _gauge("efsray_mount_up", "1 if the last probe of the mount completed.")
    size = _gauge("efsray_filesystem_size_bytes", "Size of the file system.")
    avail = _gauge("efsray_filesystem_avail_bytes", "Bytes an unprivileged writer can use.")
    used = _gauge("efsray_filesystem_used_bytes", "Bytes in use.")
    files = _gauge("efsray_filesystem_files", "Inodes in the file system.")
    files_free = _gauge("efsray_filesystem_files_free", "Free inodes.")
    latency = Metric(
        "efsray_probe_latency_seconds",
        "Latency of 4 KiB reads, writes and fsyncs: quantiles of the last probe, count and sum "
        "of every probe.",
        "summary",
    )
    throughput = _gauge(
        "efsray_probe_throughput_bytes_per_second",
        "Sequential throughput of the last probe, page cache bypassed.",
        ["direction"],
    )
    meta = _gauge(
        "efsray_probe_metadata_operations_per_second",
        "Metadata operations per second of the last probe.",
        ["operation"],
    )
    direct = _gauge("efsray_probe_direct_io", "1 if the probe used O_DIRECT.")
    duration = _gauge("efsray_probe_duration_seconds", "Wall time of the last probe.")
    success = _gauge(
        "efsray_probe_last_success_timestamp_seconds", "Unix time of the last completed probe."
    )
    for r in reports:
        m = r.mount_path
        for s in Status:
            status.add_metric([m, s.value], 1.0 if r.status is s else 0.0)
        code.add_metric([m], float(r.status.severity))
        up.add_metric([m], 1.0 if r.metrics is not None else 0.0)
        if _finite(r.collection_seconds):
            duration.add_metric([m], r.collection_seconds)
        if m in last_success:
            success.add_metric([m], last_success[m])
        x = r.metrics
        if x is None:
            continue  # no stale numbers for a mount we could not measure
        size.add_metric([m], x.disk_total_bytes)
        avail.add_metric([m], x.disk_free_bytes)
        used.add_metric([m], x.disk_used_bytes)
        files.add_metric([m], x.inodes_total)
        files_free.add_metric([m], x.inodes_free)
        direct.add_metric([m], 1.0 if x.direct_io else 0.0)
        for op in LATENCY_OPERATIONS:
            if not latency_totals.get((m, op), (0, 0.0))[0]:
                continue  # not measured (a part of the probe set to 0)
            labels = {_LABEL: m, "operation": op}
            for label, q in _QUANTILES:
                value = getattr(x, f"{op}_latency_p{q}_ms")
                if _finite(value):
                    latency.add_sample(latency.name, {**labels, "quantile": label}, value / 1000.0)
            count, total = latency_totals[(m, op)]
            latency.add_sample(f"{latency.name}_count", labels, float(count))
            latency.add_sample(f"{latency.name}_sum", labels, total)
        for direction in ("read", "write"):
            value = getattr(x, f"{direction}_throughput_mbps")
            if _finite(value):
                throughput.add_metric([m, direction], value * MIB)
        for op in METADATA_OPERATIONS:
            value = getattr(x, f"{op}_ops_per_second")
            if _finite(value):
                meta.add_metric([m, op], value)
    yield from (
        status, code, up, size, avail, used, files, files_free, latency, throughput, meta,
        direct, duration, success,
    )  # fmt: skip


def _nfs_families(reports: Sequence[MountReport]) -> Iterator[Metric]:
    op_labels = [_LABEL, "operation"]

    def counter(name: str, doc: str) -> CounterMetricFamily:
        return CounterMetricFamily(name, doc, labels=op_labels)

    ops = counter("efsray_nfs_rpc_operations", "RPC calls since mount, by NFS operation.")
    retrans = counter("efsray_nfs_rpc_retransmissions", "RPC retransmissions since mount.")
    timeouts = counter("efsray_nfs_rpc_major_timeouts", "RPC major timeouts since mount.")
    errors = counter("efsray_nfs_rpc_errors", "RPC calls that returned an error (kernel >= 5.x).")
    rtt = counter("efsray_nfs_rpc_rtt_seconds", "Summed round-trip time of RPC calls.")
    exe = counter("efsray_nfs_rpc_execute_seconds", "Summed time from queueing to reply.")
    queue = counter("efsray_nfs_rpc_queue_seconds", "Summed time RPC calls waited to be sent.")
    mean_rtt = GaugeMetricFamily(
        "efsray_nfs_rpc_mean_rtt_seconds",
        "Mean RPC round trip per call in the last collection interval.",
        labels=op_labels,
    )
    mean_exe = GaugeMetricFamily(
        "efsray_nfs_rpc_mean_execute_seconds",
        "Mean RPC execute time per call (what callers waited) in the last interval.",
        labels=op_labels,
    )
    read_bytes = CounterMetricFamily(
        "efsray_nfs_server_read_bytes", "Bytes read from the NFS server.", labels=[_LABEL]
    )
    write_bytes = CounterMetricFamily(
        "efsray_nfs_server_write_bytes", "Bytes written to the NFS server.", labels=[_LABEL]
    )
    age = _gauge("efsray_nfs_mount_age_seconds", "Seconds since the NFS mount was made.")
    info = _gauge(
        "efsray_nfs_mount_info", "NFS mount options in force.", ["device", *_INFO_OPTIONS, "hard"]
    )
    for r in reports:
        nfs = r.nfs
        if nfs is None:
            continue
        m = r.mount_path
        for name, st in nfs.operations.items():
            if st.operations == 0 and st.transmissions == 0:
                continue  # NFSv4 lists ~60 operations; most never run
            ops.add_metric([m, name], st.operations)
            retrans.add_metric([m, name], st.retransmissions)
            timeouts.add_metric([m, name], st.major_timeouts)
            if st.errors is not None:
                errors.add_metric([m, name], st.errors)
            rtt.add_metric([m, name], st.rtt_ms / 1000.0)
            exe.add_metric([m, name], st.execute_ms / 1000.0)
            queue.add_metric([m, name], st.queue_ms / 1000.0)
        for name, iv in r.nfs_interval.items():
            if iv.mean_rtt_seconds is not None:
                mean_rtt.add_metric([m, name], iv.mean_rtt_seconds)
            if iv.mean_execute_seconds is not None:
                mean_exe.add_metric([m, name], iv.mean_execute_seconds)
        if nfs.bytes is not None:
            read_bytes.add_metric([m], nfs.bytes.server_read)
            write_bytes.add_metric([m], nfs.bytes.server_write)
        if nfs.age_seconds is not None:
            age.add_metric([m], nfs.age_seconds)
        opts = nfs.options
        hard = "false" if "soft" in opts or "softerr" in opts else "true"
        info.add_metric([m, nfs.device, *(opts.get(k, "") for k in _INFO_OPTIONS), hard], 1.0)
    yield from (
        ops, retrans, timeouts, errors, rtt, exe, queue, mean_rtt, mean_exe, read_bytes,
        write_bytes, age, info,
    )  # fmt: skip


class MetricsServer(ServiceHTTPServer):
    """``GET /metrics`` (Prometheus text or OpenMetrics) and ``GET /healthz`` (JSON) of a
    :class:`MonitorMetrics`, on :class:`efsray.httpd.ServiceHTTPServer`.

    ``port=0`` binds a free port; read :attr:`port` after :meth:`start`. Use as a context
    manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        metrics: MonitorMetrics,
        registry: CollectorRegistry,
        *,
        host: str = "127.0.0.1",
        port: int = 9641,
    ) -> None:
        super().__init__(registry, metrics.health, host=host, port=port, name="efsray monitor")
        self.metrics = metrics
