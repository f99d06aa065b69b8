"""Market data: versioned OHLCV series, safe with many writers on many hosts.

A series (symbol, timeframe) is a directory ``market_data/ohlcv/<symbol>/<timeframe>/`` with
``segments/`` (immutable Arrow IPC or Parquet files, see :mod:`efsray.store.segments`) and a
version log (see :mod:`efsray.store.nfs`). Each committed change is a manifest listing the
segments that make up the series at that version. Segments of one manifest never overlap in
time and are listed in time order, so a range read opens only the segments it needs and
``tail(n)`` only the last one or two, whatever the length of the history.

Writes:
- ``append`` adds bars; a bar whose timestamp is already stored replaces it ("newest write
  wins"), so re-ingesting the same file is idempotent. Bars after the last stored one become a
  new segment; bars that fall inside stored segments are merged with them (those segments are
  rewritten).
- ``write`` replaces the whole series.
- ``compact`` merges small segments. ``append`` also merges as it goes (log-structured: when
  ``merge_factor`` neighbouring segments of the same size tier accumulate, they are merged),
  so reads stay fast without anyone running ``compact``.
Every write is an optimistic commit: if another writer commits first, the change is rebuilt on
top of the new version (reusing the segment files already written when they still apply).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from efsray.errors import (
    CorruptionError,
    InvalidDataError,
    NotFoundError,
    StorageError,
    VersionNotFoundError,
)
from efsray.store.bars import CORE_COLUMNS, TIMESTAMP_TYPE, normalize_bars
from efsray.store.blocks import SegmentCache
from efsray.store.checkpoints import MIN_GRACE_S
from efsray.store.layout import StoreLayout
from efsray.store.merging import PendingSegments, find_run
from efsray.store.names import is_valid_name
from efsray.store.nfs import ManifestCache, VersionLog, ensure_dir, list_subdirs
from efsray.store.segments import (
    FORMATS,
    Segment,
    SegmentFormat,
    conform,
    read_range,
    read_tail,
    write_segment,
)

__all__ = [
    "CommitInfo",
    "MarketDataStore",
    "SeriesInfo",
    "VerifyInfo",
    "VersionInfo",
    "list_series",
]

log = logging.getLogger("efsray.store")

Output = Literal["arrow", "pandas", "polars"]
_MANIFEST_CACHE = 512


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """What a committed write produced."""

    symbol: str
    timeframe: str
    version: int
    operation: str
    rows: int
    rows_written: int
    rows_replaced: int
    segments: int
    committed_at: str
    manifest: str


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One entry of a series' history."""

    version: int
    operation: str
    committed_at: str
    rows: int
    rows_written: int
    rows_replaced: int
    segments: int
    writer: str


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """A series at one version."""

    symbol: str
    timeframe: str
    version: int
    rows: int
    start: dt.datetime | None
    end: dt.datetime | None
    segments: int
    bytes: int
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifyInfo:
    """What :meth:`MarketDataStore.verify` checked of one version (a damaged byte raises)."""

    symbol: str
    timeframe: str
    version: int
    segments: int
    bytes: int
    manifest_checksummed: bool
    segments_without_checksums: int  # written before checksums: checked by size and decoding

    @property
    def fully_checksummed(self) -> bool:
        return self.manifest_checksummed and self.segments_without_checksums == 0


class MarketDataStore:
    """Versioned OHLCV series under ``layout.ohlcv``.

    ``merge_factor`` and ``max_segment_rows`` tune the merging that follows appends (see
    docs/store.md for the factor's trade-off between appends and reads);
    ``auto_compact=False`` turns it off (then run ``compact``). ``segment_format`` is the
    format new segment files are written in: "parquet" (the default: LZ4, delta timestamps,
    byte-stream-split floats; 0.56x the bytes of "arrow" on disk and over the wire, decoded on
    read) or "arrow" (Arrow IPC, zero-copy reads, for local disks where CPU costs more than
    bytes); both are read whatever the setting (docs/store.md has the measurements).
    ``segment_cache_bytes`` bounds the verified segment bytes kept for repeated reads (0: none;
    see :class:`~efsray.store.blocks.SegmentCache`).
    """

    def __init__(
        self,
        layout: StoreLayout,
        *,
        merge_factor: int = 8,
        max_segment_rows: int = 2**21,
        auto_compact: bool = True,
        segment_format: SegmentFormat = "parquet",
        segment_cache_bytes: int = 64 << 20,
    ) -> None:
        if merge_factor < 2:
            raise ValueError(f"merge_factor must be >= 2, got {merge_factor}")
        if max_segment_rows < 1:
            raise ValueError(f"max_segment_rows must be >= 1, got {max_segment_rows}")
        self.layout = layout
        self.merge_factor = merge_factor
        self.max_segment_rows = max_segment_rows
        self.auto_compact = auto_compact
        if segment_format not in FORMATS:
            raise InvalidDataError(
                f"segment_format must be one of {', '.join(FORMATS)}, got {segment_format!r}"
            )
        self.segment_format = segment_format
        self._cache = ManifestCache(_MANIFEST_CACHE)
        self._segments_read = SegmentCache(segment_cache_bytes)

    # --- paths and manifests -------------------------------------------------------------

    def _series(self, symbol: str, timeframe: str) -> tuple[Path, VersionLog]:
        directory = self.layout.series_dir(symbol, timeframe)
        return directory, VersionLog(directory, f"series {symbol}/{timeframe}", self._cache)

    def _manifest(
        self, symbol: str, timeframe: str, version: int | None
    ) -> tuple[Path, int, dict[str, Any]]:
        directory, vlog = self._series(symbol, timeframe)
        if version is None:
            found = vlog.latest()
            if found is None:
                raise NotFoundError(
                    f"no market data for {symbol}/{timeframe} in {self.layout.root}; "
                    "`efsray data ls` lists what is stored"
                )
            return directory, *found
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidDataError(f"version must be a positive integer, got {version!r}")
        try:
            return directory, version, vlog.read(version)
        except VersionNotFoundError:
            if not vlog.has_history():
                raise NotFoundError(
                    f"no market data for {symbol}/{timeframe} in {self.layout.root}"
                ) from None
            raise

    @staticmethod
    def _segments(manifest: dict[str, Any] | None) -> list[Segment]:
        return [Segment.from_json(s) for s in (manifest or {}).get("segments", [])]

    @staticmethod
    def _schema(columns: Sequence[str]) -> pa.Schema:
        return pa.schema(
            [pa.field(c, TIMESTAMP_TYPE if c == "timestamp" else pa.float64()) for c in columns]
        )

    # --- writing -----------------------------------------------------------------------------

    def append(self, symbol: str, timeframe: str, data: Any, **normalize: Any) -> CommitInfo:
        """Add bars to a series (creating it), replacing stored bars with equal timestamps.

        ``normalize`` takes the options of :func:`efsray.store.bars.normalize_bars`
        (column_map, naive_tz, timestamp_unit, timestamp_format).
        """
        self._series(symbol, timeframe)  # names first: a bad name fails before any work
        bars = normalize_bars(data, **normalize)
        info = self._commit(symbol, timeframe, bars, "append")
        assert info is not None
        return info

    def write(self, symbol: str, timeframe: str, data: Any, **normalize: Any) -> CommitInfo:
        """Replace the whole series with ``data`` (a new version; old versions stay readable)."""
        self._series(symbol, timeframe)
        bars = normalize_bars(data, **normalize)
        info = self._commit(symbol, timeframe, bars, "write")
        assert info is not None
        return info

    def compact(self, symbol: str, timeframe: str) -> CommitInfo | None:
        """Merge neighbouring small segments up to ``max_segment_rows``; None if nothing to do."""
        return self._commit(symbol, timeframe, None, "compact")

    def compact_all(self) -> list[CommitInfo]:
        """``compact`` every series; returns the commits that changed something."""
        done = []
        for symbol, timeframe in self.list_series():
            info = self.compact(symbol, timeframe)
            if info is not None:
                done.append(info)
        return done

    def _commit(
        self, symbol: str, timeframe: str, bars: pa.Table | None, operation: str
    ) -> CommitInfo | None:
        directory, vlog = self._series(symbol, timeframe)
        seg_dir = directory / "segments"
        ensure_dir(seg_dir)
        pending = PendingSegments()
        stats: dict[str, int] = {}
        built: list[list[Segment]] = []

        def build(base_version: int, base: dict[str, Any] | None) -> dict[str, Any] | None:
            columns = list(base["columns"]) if base else list(CORE_COLUMNS)
            if bars is not None:
                columns += [c for c in bars.column_names if c not in columns]
            schema = self._schema(columns)
            segments = self._segments(base)
            if operation == "append":
                assert bars is not None
                segments, written, replaced = self._merge_in(
                    seg_dir, segments, bars, schema, pending
                )
            elif operation == "write":
                assert bars is not None
                segments, written, replaced = self._replace_all(seg_dir, bars, schema, pending)
                replaced = int(base["rows"]) if base else 0
            else:
                if base is None:
                    raise NotFoundError(f"no market data for {symbol}/{timeframe} to compact")
                merged = self._compact_runs(seg_dir, segments, schema, pending, tiered=False)
                if merged == segments:
                    return None
                segments, written, replaced = merged, 0, 0
            if operation != "compact" and self.auto_compact:
                segments = self._compact_runs(seg_dir, segments, schema, pending, tiered=True)
            stats.update(written=written, replaced=replaced)
            built.append(segments)
            return self._manifest_dict(symbol, timeframe, operation, columns, segments, stats)

        def before_publish() -> None:
            pending.syncs.wait()
            missing = pending.missing(seg_dir, built[-1])
            if missing:
                raise StorageError(
                    errno.ENOENT,
                    f"segment {missing[0]} of this {operation} of {symbol}/{timeframe} was "
                    "removed before its commit, by a cleanup whose grace period was shorter "
                    "than the write took (--grace with --force); nothing was committed: "
                    f"retry, and keep --grace >= {MIN_GRACE_S:.0f} s while writers run",
                    str(seg_dir / missing[0]),
                )

        with pending.syncs:
            try:
                committed = vlog.commit(build, before_publish=before_publish)
            except FileNotFoundError as exc:  # an input of the merge is missing
                raise self._missing(symbol, timeframe, None, exc) from None
        if committed is None:
            pending.discard_unused(seg_dir, ())
            return None  # only compact declines
        version, manifest = committed
        pending.discard_unused(seg_dir, (s["file"] for s in manifest["segments"]))
        return CommitInfo(
            symbol=symbol,
            timeframe=timeframe,
            version=version,
            operation=operation,
            rows=int(manifest["rows"]),
            rows_written=stats.get("written", 0),
            rows_replaced=stats.get("replaced", 0),
            segments=len(manifest["segments"]),
            committed_at=str(manifest["committed_at"]),
            manifest=str(vlog.path(version)),
        )

    @staticmethod
    def _manifest_dict(
        symbol: str,
        timeframe: str,
        operation: str,
        columns: list[str],
        segments: list[Segment],
        stats: dict[str, int],
    ) -> dict[str, Any]:
        return {
            "format": 1,
            "kind": "ohlcv",
            "symbol": symbol,
            "timeframe": timeframe,
            "operation": operation,
            "columns": columns,
            "rows": sum(s.rows for s in segments),
            "ts_min": segments[0].ts_min if segments else None,
            "ts_max": segments[-1].ts_max if segments else None,
            "rows_written": stats.get("written", 0),
            "rows_replaced": stats.get("replaced", 0),
            "segments": [s.to_json() for s in segments],
        }

    def _write_rows(
        self, seg_dir: Path, table: pa.Table, pending: PendingSegments
    ) -> list[Segment]:
        """Write a sorted table as one or more segments of at most max_segment_rows (durable
        once ``pending.syncs`` has been waited for)."""
        step = self.max_segment_rows
        return [
            write_segment(seg_dir, table.slice(offset, step), self.segment_format, pending.syncs)
            for offset in range(0, table.num_rows, step)
        ]

    def _merge_in(
        self,
        seg_dir: Path,
        segments: list[Segment],
        bars: pa.Table,
        schema: pa.Schema,
        pending: PendingSegments,
    ) -> tuple[list[Segment], int, int]:
        ts = bars.column("timestamp")
        lo, hi = ts[0].value, ts[-1].value  # UTC nanoseconds
        hit = [s for s in segments if s.overlaps(lo, hi)]
        key = ("merge", tuple(s.file for s in hit))
        cached = pending.get(key, seg_dir)
        if cached is None:
            replaced = 0
            if hit:
                old = read_range(seg_dir, hit, schema, drop_cache=True)
                dup = pc.is_in(old.column("timestamp"), value_set=ts.combine_chunks())
                replaced = int(pc.sum(dup).as_py() or 0)
                kept = old.filter(pc.invert(dup))
                both = conform([kept, bars], schema).combine_chunks()
                merged = both.take(pc.sort_indices(both.column("timestamp")))
            else:
                merged = conform([bars], schema).combine_chunks()
            cached = (self._write_rows(seg_dir, merged, pending), replaced)
            pending.put(key, *cached)
        new_segments, replaced = cached
        untouched = [s for s in segments if s not in hit]
        result = sorted(untouched + new_segments, key=lambda s: s.ts_min)
        return result, bars.num_rows, replaced

    def _replace_all(
        self, seg_dir: Path, bars: pa.Table, schema: pa.Schema, pending: PendingSegments
    ) -> tuple[list[Segment], int, int]:
        cached = pending.get(("write",), seg_dir)
        if cached is None:
            table = conform([bars], schema).combine_chunks()
            cached = (self._write_rows(seg_dir, table, pending), 0)
            pending.put(("write",), *cached)
        return list(cached[0]), bars.num_rows, 0

    def _compact_runs(
        self,
        seg_dir: Path,
        segments: list[Segment],
        schema: pa.Schema,
        pending: PendingSegments,
        *,
        tiered: bool,
    ) -> list[Segment]:
        """Merge neighbours. Tiered: runs of merge_factor same-tier segments (append's
        incremental merging). Not tiered: greedy runs up to max_segment_rows (compact)."""
        segments = list(segments)
        while True:
            run = find_run(
                [seg.rows for seg in segments],
                merge_factor=self.merge_factor,
                max_rows=self.max_segment_rows,
                tiered=tiered,
            )
            if run is None:
                return segments
            start, stop = run
            group = segments[start:stop]
            key = ("compact", tuple(s.file for s in group))
            cached = pending.get(key, seg_dir)
            if cached is None:
                table = read_range(seg_dir, group, schema, drop_cache=True)
                cached = (self._write_rows(seg_dir, table, pending), 0)
                pending.put(key, *cached)
            segments[start:stop] = cached[0]

    # --- reading -----------------------------------------------------------------------------

    def read(
        self,
        symbol: str,
        timeframe: str,
        *,
        start: Any = None,
        end: Any = None,
        columns: Sequence[str] | None = None,
        version: int | None = None,
        output: Output = "arrow",
    ) -> Any:
        """Bars with ``start <= timestamp <= end`` (both optional, inclusive), in time order.

        ``columns`` selects columns (``timestamp`` always comes first); ``version`` reads the
        series as it was at that version; ``output`` is "arrow", "pandas" or "polars".
        """
        lo, hi = _to_ns(start, "start"), _to_ns(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise InvalidDataError(f"start {start!r} is after end {end!r}")

        def run(manifest: dict[str, Any], directory: Path) -> pa.Table:
            schema = self._schema(manifest["columns"])
            cols = _columns(columns, schema)
            return read_range(
                directory / "segments", self._segments(manifest), schema, cols, lo, hi,
                contiguous=output != "arrow",  # pandas and polars want one buffer per column
                cache=self._segments_read,
            )  # fmt: skip

        return _convert(self._read_with_retry(symbol, timeframe, version, run), output)

    def tail(
        self,
        symbol: str,
        timeframe: str,
        n: int = 1000,
        *,
        columns: Sequence[str] | None = None,
        version: int | None = None,
        output: Output = "arrow",
    ) -> Any:
        """The newest ``n`` bars in time order, reading only the files that hold them."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise InvalidDataError(f"n must be a non-negative integer, got {n!r}")

        def run(manifest: dict[str, Any], directory: Path) -> pa.Table:
            schema = self._schema(manifest["columns"])
            cols = _columns(columns, schema)
            if n == 0:
                return schema.empty_table().select(cols or schema.names)
            return read_tail(
                directory / "segments", self._segments(manifest), schema, n, cols,
                cache=self._segments_read,
            )  # fmt: skip

        return _convert(self._read_with_retry(symbol, timeframe, version, run), output)

    def _read_with_retry(self, symbol: str, timeframe: str, version: int | None, run: Any) -> Any:
        # A segment of the latest version can vanish only if the series moved on and cleanup
        # ran past its grace period while we read: take the newer version and read again.
        for attempt in range(3):
            directory, got, manifest = self._manifest(symbol, timeframe, version)
            try:
                return run(manifest, directory)
            except FileNotFoundError as exc:
                if version is not None:
                    raise VersionNotFoundError(
                        f"version {got} of {symbol}/{timeframe} is no longer complete: its "
                        f"file {Path(exc.filename or '?').name} was removed by retention. "
                        "Read a newer version (`efsray data history`)."
                    ) from None
                if attempt == 2:
                    raise self._missing(symbol, timeframe, got, exc) from None
                log.info("segment vanished while reading %s/%s; re-reading", symbol, timeframe)
        raise AssertionError("unreachable")

    def _missing(
        self, symbol: str, timeframe: str, version: int | None, exc: FileNotFoundError
    ) -> CorruptionError:
        """The error for a latest version that names a segment file that does not exist."""
        name = Path(exc.filename or "?").name
        which = f"version {version}" if version else "the latest version"
        return CorruptionError(
            f"{which} of {symbol}/{timeframe} names segment {name}, which is missing from "
            f"{self.layout.series_dir(symbol, timeframe) / 'segments'}: removed by a cleanup "
            "whose grace period was shorter than a writer's commit (--force), or by hand. "
            "Restore the file from a backup, or read an older version (`efsray data history`) "
            "and write the series again from it or from its source"
        )

    def verify(self, symbol: str, timeframe: str, *, version: int | None = None) -> VerifyInfo:
        """Read every byte of a version (latest by default) and check it: the manifest's
        checksum, every segment's block checksums (or, for segments written before checksums,
        its size), and that each segment decodes to the rows its manifest says.

        Raises CorruptionError naming the first damaged file (a missing one included); the
        result says what older parts of the store could only be checked by size.
        """
        directory, got, manifest = self._manifest(symbol, timeframe, version)
        _, vlog = self._series(symbol, timeframe)
        checksummed = vlog.verified(got)
        segments = self._segments(manifest)
        schema = self._schema(manifest["columns"])
        for seg in segments:
            try:
                table = read_range(directory / "segments", [seg], schema)
            except FileNotFoundError as exc:
                raise self._missing(symbol, timeframe, got, exc) from None
            if table.num_rows != seg.rows:
                raise CorruptionError(
                    f"segment {directory / 'segments' / seg.file} holds {table.num_rows} rows, "
                    f"its manifest says {seg.rows}; restore it from a backup"
                )
        return VerifyInfo(
            symbol=symbol,
            timeframe=timeframe,
            version=got,
            segments=len(segments),
            bytes=sum(seg.bytes for seg in segments),
            manifest_checksummed=checksummed,
            segments_without_checksums=sum(1 for seg in segments if not seg.blocks),
        )

    def info(self, symbol: str, timeframe: str, *, version: int | None = None) -> SeriesInfo:
        """Size and time span of a series at a version (latest by default)."""
        _, got, manifest = self._manifest(symbol, timeframe, version)
        return _series_info(symbol, timeframe, got, manifest)

    def history(
        self, symbol: str, timeframe: str, *, limit: int | None = None
    ) -> list[VersionInfo]:
        """Versions, newest first, back to the oldest one retention kept."""
        _, latest, _ = self._manifest(symbol, timeframe, None)
        out: list[VersionInfo] = []
        for version in range(latest, 0, -1):
            if limit is not None and len(out) >= limit:
                break
            try:
                _, _, m = self._manifest(symbol, timeframe, version)
            except VersionNotFoundError:
                break
            writer = m.get("writer") or {}
            out.append(
                VersionInfo(
                    version=version,
                    operation=str(m.get("operation")),
                    committed_at=str(m.get("committed_at")),
                    rows=int(m.get("rows", 0)),
                    rows_written=int(m.get("rows_written", 0)),
                    rows_replaced=int(m.get("rows_replaced", 0)),
                    segments=len(m.get("segments", [])),
                    writer=f"{writer.get('host', '?')}:{writer.get('pid', '?')}",
                )
            )
        return out

    def list_series(self) -> list[tuple[str, str]]:
        """(symbol, timeframe) of every stored series, sorted. Uses directory listings, so a
        series created on another host in the last minute may be missing (NFS caching)."""
        return list_series(self.layout)

    def infos(self) -> list[SeriesInfo]:
        """``info`` of every stored series at its latest version."""
        return [self.info(s, t) for s, t in self.list_series()]

    def files(self, symbol: str, timeframe: str, version: int | None = None) -> list[Path]:
        """Exactly the segment files of ``version`` (default: the latest), in time order.

        Their rows are the series at that version, each bar once: for DuckDB, polars or
        pyarrow (``efsray.sql``; docs/sql.md). A glob of ``segments/`` is not: it also holds
        segments superseded by later versions (kept for older readers until retention).
        Segments are ``.arrow`` (Arrow IPC) or ``.parquet`` files; one written before a
        column was added lacks that column. Retention may remove the files of an old version.
        """
        directory, _, manifest = self._manifest(symbol, timeframe, version)
        return [directory / "segments" / seg.file for seg in self._segments(manifest)]


# --- helpers -----------------------------------------------------------------------------------


def list_series(layout: StoreLayout) -> list[tuple[str, str]]:
    """(symbol, timeframe) of every series under ``layout``, sorted (see
    :meth:`MarketDataStore.list_series`; retention lists them too)."""
    root = layout.ohlcv
    return [
        (symbol, timeframe)
        for symbol in _dirs(root)
        for timeframe in _dirs(root / symbol)
        if VersionLog(root / symbol / timeframe, "").has_history()
    ]


def _dirs(path: Path) -> list[str]:
    """Sorted subdirectories of ``path`` with valid names (not ours: temp files,
    lost+found, editor debris)."""
    return sorted(name for name in list_subdirs(path) if is_valid_name(name))


def _columns(columns: Sequence[str] | None, schema: pa.Schema) -> list[str] | None:
    if columns is None:
        return None
    if isinstance(columns, str):
        columns = [columns]
    unknown = [c for c in columns if c not in schema.names]
    if unknown:
        raise InvalidDataError(
            f"unknown column(s) {', '.join(map(repr, unknown))}; the series has "
            f"{', '.join(schema.names)}"
        )
    return ["timestamp", *[c for c in columns if c != "timestamp"]]


def _to_ns(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int | np.integer) and not isinstance(value, bool):
        return int(value)
    try:
        import pandas as pd

        stamp = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise InvalidDataError(
            f"{what} {value!r} is not a time: use a datetime, an ISO-8601 string or "
            f"nanoseconds since the epoch ({exc})"
        ) from None
    if stamp is pd.NaT:
        raise InvalidDataError(f"{what} is NaT; give a real time")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.value)


def _convert(table: pa.Table, output: Output) -> Any:
    if output == "arrow":
        return table
    if output == "pandas":
        # One block per column and Arrow memory released as it goes: no consolidation copy
        # (the table is ours to consume).
        return table.to_pandas(split_blocks=True, self_destruct=True)
    if output == "polars":
        import polars as pl

        return pl.from_arrow(table)
    raise InvalidDataError(f"output must be 'arrow', 'pandas' or 'polars', got {output!r}")


def _series_info(symbol: str, timeframe: str, version: int, m: dict[str, Any]) -> SeriesInfo:
    def when(ns: Any) -> dt.datetime | None:
        if ns is None:
            return None
        return dt.datetime.fromtimestamp(int(ns) // 1_000_000_000, dt.UTC).replace(
            microsecond=(int(ns) // 1000) % 1_000_000
        )

    segments = m.get("segments", [])
    return SeriesInfo(
        symbol=symbol,
        timeframe=timeframe,
        version=version,
        rows=int(m.get("rows", 0)),
        start=when(m.get("ts_min")),
        end=when(m.get("ts_max")),
        segments=len(segments),
        bytes=sum(int(s["bytes"]) for s in segments),
        columns=tuple(m.get("columns", ())),
    )
