"""What one probe of one mount measured: the seed's ``EFSPerformanceMetrics``, and more.

Units: the seed's fields keep the seed's units (milliseconds; ``*_gb`` in GiB, i.e. bytes /
1024**3 as the seed computed them; ``*_mbps`` in MiB/s, megabytes of 1024**2 bytes per second,
not megabits). The seed's single ``read_latency_ms`` / ``write_latency_ms`` are the medians of
many samples. Values that were not measured (a part of the probe set to 0) are NaN.
Prometheus gets base units (seconds, bytes) from :mod:`efsray.monitor.exporter`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from efsray.monitor.mountstats import MountStats, OpInterval
from efsray.monitor.status import Status

__all__ = [
    "LATENCY_OPERATIONS",
    "METADATA_OPERATIONS",
    "EFSPerformanceMetrics",
    "MountReport",
    "metrics_from_probe",
    "percentile",
]

GIB = 1024**3
MIB = 1024**2
NAN = math.nan
LATENCY_OPERATIONS: tuple[str, ...] = ("read", "write", "fsync")
METADATA_OPERATIONS: tuple[str, ...] = ("create", "stat", "rename", "unlink")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation (numpy's default); NaN if empty."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q={q} must be within 0..100")
    if not values:
        return NAN
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass(frozen=True, slots=True)
class EFSPerformanceMetrics:
    """Performance of one mount at one time (the seed's fields first, in the seed's order)."""

    mount_path: str
    read_latency_ms: float
    write_latency_ms: float
    disk_usage_gb: float
    disk_free_gb: float
    read_throughput_mbps: float
    write_throughput_mbps: float
    timestamp: dt.datetime
    # Latency percentiles over many operations, in milliseconds.
    read_latency_p50_ms: float = NAN
    read_latency_p95_ms: float = NAN
    read_latency_p99_ms: float = NAN
    write_latency_p50_ms: float = NAN
    write_latency_p95_ms: float = NAN
    write_latency_p99_ms: float = NAN
    fsync_latency_p50_ms: float = NAN
    fsync_latency_p95_ms: float = NAN
    fsync_latency_p99_ms: float = NAN
    # Metadata operations per second, each kind timed on its own.
    create_ops_per_second: float = NAN
    stat_ops_per_second: float = NAN
    rename_ops_per_second: float = NAN
    unlink_ops_per_second: float = NAN
    # Space and inodes, exact.
    disk_total_bytes: int = 0
    disk_free_bytes: int = 0
    disk_used_bytes: int = 0
    inodes_total: int = 0
    inodes_free: int = 0
    inodes_used: int = 0
    # How it was measured.
    direct_io: bool = False
    latency_samples: int = 0
    metadata_files: int = 0
    throughput_bytes: int = 0
    block_bytes: int = 0
    probe_seconds: float = NAN

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None:
            raise ValueError(
                f"timestamp {self.timestamp.isoformat()} has no time zone; "
                "pass an aware UTC time (datetime.now(timezone.utc))"
            )

    @property
    def metadata_ops_per_second(self) -> float:
        """All four metadata kinds together: operations / total time."""
        rates: list[float] = [getattr(self, f"{op}_ops_per_second") for op in METADATA_OPERATIONS]
        if not all(math.isfinite(r) and r > 0 for r in rates):
            return NAN
        return len(rates) / sum(1.0 / r for r in rates)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class MountReport:
    """One collection for one mount: the metrics if the probe worked, and the verdict."""

    mount_path: str
    status: Status
    timestamp: dt.datetime
    reasons: tuple[str, ...] = ()
    metrics: EFSPerformanceMetrics | None = None
    error: str | None = None
    samples: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    nfs: MountStats | None = None
    nfs_interval: Mapping[str, OpInterval] = field(default_factory=dict)
    nfs_since_mount: bool = False
    collection_seconds: float = NAN

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no raw samples, no full mountstats)."""
        return {
            "mount_path": self.mount_path,
            "status": self.status.value,
            "reasons": list(self.reasons),
            "error": self.error,
            "timestamp": self.timestamp.isoformat(),
            "collection_seconds": self.collection_seconds,
            "metrics": self.metrics.to_dict() if self.metrics else None,
            "nfs": (
                {
                    "device": self.nfs.device,
                    "mount_point": self.nfs.mount_point,
                    "since_mount": self.nfs_since_mount,
                    "operations": {k: asdict(v) for k, v in self.nfs_interval.items()},
                }
                if self.nfs is not None
                else None
            ),
        }


def metrics_from_probe(
    mount_path: str, probe: Mapping[str, Any], timestamp: dt.datetime
) -> tuple[EFSPerformanceMetrics, dict[str, tuple[float, ...]]]:
    """Build the metrics (and the raw samples, in seconds) from :func:`run_probe`'s JSON."""
    raw = probe.get("samples") or {}
    samples = {op: tuple(float(x) for x in raw.get(op, ())) for op in raw}
    space = probe["space"]
    tp = probe.get("throughput") or {}
    nbytes = int(tp.get("bytes") or 0)

    def pct(op: str, q: float) -> float:
        return percentile(samples.get(op, ()), q) * 1000.0

    def rate(op: str) -> float:
        values = samples.get(op, ())
        total = sum(values)
        return len(values) / total if values and total > 0 else NAN

    def mibps(key: str) -> float:
        seconds = tp.get(key)
        return nbytes / seconds / MIB if nbytes and seconds else NAN

    fields: dict[str, Any] = {
        f"{op}_latency_p{q}_ms": pct(op, q) for op in LATENCY_OPERATIONS for q in (50, 95, 99)
    }
    fields.update({f"{op}_ops_per_second": rate(op) for op in METADATA_OPERATIONS})
    metrics = EFSPerformanceMetrics(
        mount_path=mount_path,
        read_latency_ms=fields["read_latency_p50_ms"],
        write_latency_ms=fields["write_latency_p50_ms"],
        disk_usage_gb=space["used_bytes"] / GIB,
        disk_free_gb=space["free_bytes"] / GIB,
        read_throughput_mbps=mibps("read_seconds"),
        write_throughput_mbps=mibps("write_seconds"),
        timestamp=timestamp,
        disk_total_bytes=int(space["total_bytes"]),
        disk_free_bytes=int(space["free_bytes"]),
        disk_used_bytes=int(space["used_bytes"]),
        inodes_total=int(space["inodes_total"]),
        inodes_free=int(space["inodes_free"]),
        inodes_used=int(space["inodes_used"]),
        direct_io=bool(probe.get("direct_io", False)),
        latency_samples=len(samples.get("read", ())),
        metadata_files=len(samples.get("create", ())),
        throughput_bytes=nbytes,
        block_bytes=int(tp.get("block_bytes") or 0),
        probe_seconds=float(probe.get("probe_seconds", NAN)),
        **fields,
    )
    return metrics, samples
