"""Thresholds turn measurements into one status: ok, degraded, failing or hung.

- **hung**: the probe did not answer within its deadline (a blocked mount), or a probe
  started earlier is still stuck in the kernel.
- **failing**: the probe failed (EIO, EACCES, ENOSPC, ...), or p99 latency is above the
  failing threshold, or free space/inodes are below the failing percentage.
- **degraded**: p99 latency above the degraded threshold, free space/inodes below the
  degraded percentage, or NFS retransmissions/major timeouts in the last interval.
- **ok**: none of the above.

The CLI exits with :attr:`Status.exit_code`, ``/healthz`` answers 200 for ok and degraded and
503 for failing and hung.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from efsray.config import Settings
    from efsray.monitor.metrics import EFSPerformanceMetrics
    from efsray.monitor.mountstats import OpInterval

__all__ = ["Status", "Thresholds", "evaluate", "worst"]


class Status(StrEnum):
    OK = "ok"
    DEGRADED = "degraded"
    FAILING = "failing"
    HUNG = "hung"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]

    @property
    def exit_code(self) -> int:
        """0 for ok; distinct codes (10-12) that no efsray error uses for the others."""
        return _EXIT_CODES[self]

    @property
    def healthy(self) -> bool:
        """Whether a load balancer or container healthcheck should consider it serving."""
        return self in (Status.OK, Status.DEGRADED)


_SEVERITY = {Status.OK: 0, Status.DEGRADED: 1, Status.FAILING: 2, Status.HUNG: 3}
_EXIT_CODES = {Status.OK: 0, Status.DEGRADED: 10, Status.FAILING: 11, Status.HUNG: 12}


def worst(statuses: Iterable[Status]) -> Status:
    """The most severe status (ok for none)."""
    return max(statuses, key=lambda s: s.severity, default=Status.OK)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits from settings (EFSRAY_MONITOR_*); latencies in milliseconds, apply to p99."""

    latency_degraded_ms: float = 50.0
    latency_failing_ms: float = 1000.0
    free_degraded_percent: float = 10.0
    free_failing_percent: float = 2.0
    retrans_degraded_ratio: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.latency_degraded_ms <= self.latency_failing_ms:
            raise ValueError(
                f"latency thresholds must satisfy 0 < degraded ({self.latency_degraded_ms:g} ms)"
                f" <= failing ({self.latency_failing_ms:g} ms)"
            )
        if not 0 <= self.free_failing_percent <= self.free_degraded_percent <= 100:
            raise ValueError(
                "free-space thresholds must satisfy 0 <= failing "
                f"({self.free_failing_percent:g}%) <= degraded "
                f"({self.free_degraded_percent:g}%) <= 100"
            )
        if not 0 <= self.retrans_degraded_ratio <= 1:
            raise ValueError(f"retrans_degraded_ratio={self.retrans_degraded_ratio} not in 0..1")

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            latency_degraded_ms=settings.efsray_monitor_latency_degraded_ms,
            latency_failing_ms=settings.efsray_monitor_latency_failing_ms,
            free_degraded_percent=settings.efsray_monitor_free_degraded_percent,
            free_failing_percent=settings.efsray_monitor_free_failing_percent,
            retrans_degraded_ratio=settings.efsray_monitor_retrans_degraded_ratio,
        )


def evaluate(
    metrics: EFSPerformanceMetrics,
    thresholds: Thresholds,
    nfs_interval: Mapping[str, OpInterval] | None = None,
) -> tuple[Status, tuple[str, ...]]:
    """Status and human-readable reasons for one successful probe of one mount."""
    findings: list[tuple[Status, str]] = []
    for op in ("read", "write", "fsync"):
        p99 = getattr(metrics, f"{op}_latency_p99_ms")
        if not math.isfinite(p99):
            continue
        if p99 > thresholds.latency_failing_ms:
            findings.append(
                (Status.FAILING, f"{op} p99 {p99:.1f} ms > {thresholds.latency_failing_ms:g} ms")
            )
        elif p99 > thresholds.latency_degraded_ms:
            findings.append(
                (Status.DEGRADED, f"{op} p99 {p99:.1f} ms > {thresholds.latency_degraded_ms:g} ms")
            )
    for what, free, total in (
        ("space", metrics.disk_free_bytes, metrics.disk_total_bytes),
        ("inodes", metrics.inodes_free, metrics.inodes_total),
    ):
        if total <= 0:
            continue  # the filesystem does not report it (FUSE, some NFS servers)
        percent = 100.0 * free / total
        if percent < thresholds.free_failing_percent:
            findings.append(
                (
                    Status.FAILING,
                    f"free {what} {percent:.1f}% < {thresholds.free_failing_percent:g}%",
                )
            )
        elif percent < thresholds.free_degraded_percent:
            findings.append(
                (
                    Status.DEGRADED,
                    f"free {what} {percent:.1f}% < {thresholds.free_degraded_percent:g}%",
                )
            )
    if nfs_interval:
        calls = sum(i.operations for i in nfs_interval.values())
        retrans = sum(i.retransmissions for i in nfs_interval.values())
        timeouts = sum(i.major_timeouts for i in nfs_interval.values())
        if calls and retrans / calls > thresholds.retrans_degraded_ratio:
            findings.append(
                (Status.DEGRADED, f"NFS retransmitted {retrans} of {calls} RPCs in the interval")
            )
        if timeouts:
            findings.append((Status.DEGRADED, f"{timeouts} NFS major timeouts in the interval"))
    status = worst(s for s, _ in findings)
    return status, tuple(reason for _, reason in findings)
