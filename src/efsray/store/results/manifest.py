"""The results table's manifest: which segments make a version, with what in them.

A manifest is committed through the store's version log (:class:`efsray.store.nfs.VersionLog`)
as JSON; in memory it is a tree of frozen dataclasses. Each segment entry carries what lets a
reader skip the file without opening it: its run-id range (to load a run by id), its creation
time range, and the finite min/max of every metric (to skip a filter's misses), plus its size
and checksum (xxh3, verified when it is read whole), the size and checksum of its Parquet
footer (verified when a part of it is read, see :mod:`efsray.store.results.parts`), and its
sidecar: the Arrow IPC streams of its runs' equity curves and trade lists, whose offsets are
in the segment's rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from efsray.errors import CorruptionError
from efsray.store.results.index import IndexRef

__all__ = ["FORMAT", "SegmentEntry", "SidecarEntry", "TableManifest"]

FORMAT = "efsray-results-table/1"


@dataclass(frozen=True, slots=True)
class SidecarEntry:
    """A file of concatenated Arrow IPC streams (one per stored table of a run), then (from
    efsray's run index on) the segment's run index, whose fence ``index`` locates."""

    name: str
    bytes: int
    digest: str
    index: IndexRef | None = None  # None: written before the run index

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "bytes": self.bytes, "digest": self.digest}
        if self.index is not None:
            out["index"] = self.index.to_json()
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SidecarEntry:
        index = d.get("index")
        return cls(str(d["name"]), int(d["bytes"]), str(d["digest"]),
                   None if index is None else IndexRef.from_json(index))  # fmt: skip

    @property
    def tables_bytes(self) -> int:
        """The bytes of the runs' tables (what precedes the run index)."""
        return self.bytes if self.index is None else self.index.start


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """A Parquet file of runs, sorted by run id."""

    name: str
    rows: int
    bytes: int
    digest: str
    min_id: str
    max_id: str
    min_created_ms: int
    max_created_ms: int
    metrics: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    sidecar: SidecarEntry | None = None
    # (size, digest) of the Parquet footer, at the end of the file; None: a segment written
    # before ranged reads (read and verified whole)
    footer: tuple[int, str] | None = None

    def holds(self, run_id: str) -> bool:
        return self.min_id <= run_id <= self.max_id

    def overlaps(self, low: str, high: str) -> bool:
        return not (high < self.min_id or self.max_id < low)

    def files(self) -> tuple[str, ...]:
        return (self.name,) if self.sidecar is None else (self.name, self.sidecar.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "rows": self.rows, "bytes": self.bytes, "digest": self.digest,
            "ids": [self.min_id, self.max_id],
            "created_ms": [self.min_created_ms, self.max_created_ms],
            "metrics": {k: [lo, hi] for k, (lo, hi) in sorted(self.metrics.items())},
            "sidecar": None if self.sidecar is None else self.sidecar.to_json(),
            **({} if self.footer is None else {"footer": [self.footer[0], self.footer[1]]}),
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SegmentEntry:
        side = d.get("sidecar")
        foot = d.get("footer")
        return cls(
            name=str(d["name"]),
            rows=int(d["rows"]),
            bytes=int(d["bytes"]),
            digest=str(d["digest"]),
            min_id=str(d["ids"][0]),
            max_id=str(d["ids"][1]),
            min_created_ms=int(d["created_ms"][0]),
            max_created_ms=int(d["created_ms"][1]),
            metrics={str(k): (float(v[0]), float(v[1])) for k, v in d["metrics"].items()},
            sidecar=None if side is None else SidecarEntry.from_json(side),
            footer=None if foot is None else (int(foot[0]), str(foot[1])),
        )


@dataclass(frozen=True, slots=True)
class TableManifest:
    """One committed version of a strategy's results table."""

    version: int
    strategy: str
    segments: tuple[SegmentEntry, ...] = ()
    committed_at: str = ""

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    def files(self) -> set[str]:
        return {name for s in self.segments for name in s.files()}

    def to_json(self) -> dict[str, Any]:
        """The body a commit publishes (the version log adds version, parent, time, writer)."""
        return {
            "format": FORMAT,
            "kind": "results-table",
            "strategy": self.strategy,
            "rows": self.rows,
            "segments": [s.to_json() for s in self.segments],
        }

    @classmethod
    def from_json(cls, version: int, d: Mapping[str, Any], where: str) -> TableManifest:
        if d.get("format") != FORMAT:
            raise CorruptionError(
                f"{where} has format {d.get('format')!r}, not {FORMAT!r}; a newer efsray "
                "wrote it (upgrade) or it was damaged (restore it from a backup)"
            )
        try:
            segments = tuple(SegmentEntry.from_json(s) for s in d["segments"])
            manifest = cls(version, str(d["strategy"]), segments, str(d.get("committed_at", "")))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CorruptionError(
                f"{where} is not a valid results manifest ({type(exc).__name__}: {exc}); "
                "restore it from a backup"
            ) from None
        if manifest.rows != d.get("rows"):
            raise CorruptionError(
                f"{where} says {d.get('rows')!r} rows but its segments hold {manifest.rows}; "
                "it was damaged: restore it from a backup"
            )
        return manifest
