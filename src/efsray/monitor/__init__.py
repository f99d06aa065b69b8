"""Performance monitoring of EFS mounts: probes, NFS counters, Prometheus, health.

``EFSPerformanceMonitor(mount_paths)`` probes each mount in a child process under a deadline
and returns :class:`EFSPerformanceMetrics` (the seed's API) or full :class:`MountReport`\\ s;
:class:`MonitorMetrics` and :class:`MetricsServer` export them on ``/metrics`` and
``/healthz``; :class:`MonitorService` runs it all on an interval (``efsray monitor``).
"""

from __future__ import annotations

from efsray.monitor.exporter import LATENCY_BUCKETS, MetricsServer, MonitorMetrics
from efsray.monitor.metrics import EFSPerformanceMetrics, MountReport, percentile
from efsray.monitor.monitor import EFSPerformanceMonitor
from efsray.monitor.mountstats import (
    MountStats,
    OpInterval,
    OpStats,
    mount_for_path,
    op_intervals,
    parse_mountstats,
    read_mountstats,
)
from efsray.monitor.probes import PROBE_PREFIX, ProbeConfig, cleanup_stale_probes
from efsray.monitor.service import MonitorService
from efsray.monitor.status import Status, Thresholds, evaluate, worst

__all__ = [
    "LATENCY_BUCKETS",
    "PROBE_PREFIX",
    "EFSPerformanceMetrics",
    "EFSPerformanceMonitor",
    "MetricsServer",
    "MonitorMetrics",
    "MonitorService",
    "MountReport",
    "MountStats",
    "OpInterval",
    "OpStats",
    "ProbeConfig",
    "Status",
    "Thresholds",
    "cleanup_stale_probes",
    "evaluate",
    "mount_for_path",
    "op_intervals",
    "parse_mountstats",
    "percentile",
    "read_mountstats",
    "worst",
]
