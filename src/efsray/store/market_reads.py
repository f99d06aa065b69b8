"""Market data, the read path of :class:`efsray.store.market.MarketDataStore`: the store's
state, series paths and manifests, reading a range or the tail of a series (retried when
retention removes a superseded version's segments meanwhile), verifying, history and
listing."""

from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from efsray.errors import CorruptionError, InvalidDataError, NotFoundError, VersionNotFoundError
from efsray.store.bars import TIMESTAMP_TYPE
from efsray.store.blocks import SegmentCache
from efsray.store.layout import StoreLayout
from efsray.store.market_types import Output, SeriesInfo, VerifyInfo, VersionInfo
from efsray.store.names import is_valid_name
from efsray.store.nfs import ManifestCache, VersionLog, list_subdirs
from efsray.store.segments import FORMATS, Segment, SegmentFormat, read_range, read_tail

log = logging.getLogger("efsray.store")

_MANIFEST_CACHE = 512
# Results of recent tails, by (series, version, n, columns, output): a version never changes,
# so a repeated tail of an unchanged series (a dashboard polling, a backtest re-reading its
# window) copies the frame built last time (a deep copy of 1,000 bars: ~50 us) instead of
# building a new one (~600 us for pandas). Only small results are kept.
_TAIL_RESULTS = 16
_TAIL_RESULT_BYTES = 4 << 20


class MarketReads:
    """Reading series; the base of :class:`efsray.store.market.MarketDataStore`, which
    documents the arguments."""

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
        self._tails: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
        self._logs: dict[tuple[str, str], tuple[Path, VersionLog]] = {}
        self._tails_lock = threading.Lock()

    # --- paths and manifests -------------------------------------------------------------

    def _series(self, symbol: str, timeframe: str) -> tuple[Path, VersionLog]:
        key = (symbol, timeframe)
        named = isinstance(symbol, str) and isinstance(timeframe, str)
        found = self._logs.get(key) if named else None
        if found is None:  # names validated once; a log holds no state beyond its paths
            directory = self.layout.series_dir(symbol, timeframe)  # validates the names
            found = directory, VersionLog(directory, f"series {symbol}/{timeframe}", self._cache)
            if len(self._logs) >= _MANIFEST_CACHE:
                self._logs.clear()
            self._logs[key] = found
        return found

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
        return _schema_of(tuple(columns))

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

        def run(manifest: dict[str, Any], directory: Path) -> Any:
            schema = self._schema(manifest["columns"])
            cols = _columns(columns, schema)
            committed = manifest.get("version")
            key = (directory, committed, n, None if cols is None else tuple(cols), output)
            kept = self._kept_tail(key) if isinstance(committed, int) else None
            if kept is not None:
                return _copy(kept, output)
            if n == 0:
                return _convert(schema.empty_table().select(cols or schema.names), output)
            table = read_tail(
                directory / "segments", self._segments(manifest), schema, n, cols,
                cache=self._segments_read,
            )  # fmt: skip
            if not isinstance(committed, int) or table.nbytes > _TAIL_RESULT_BYTES:
                return _convert(table, output)
            # pandas: one consolidated frame, kept, and copies of it handed out
            result = table.to_pandas() if output == "pandas" else table
            self._keep_tail(key, result)
            return _copy(result, output)

        return self._read_with_retry(symbol, timeframe, version, run)

    def _kept_tail(self, key: tuple[Any, ...]) -> Any:
        with self._tails_lock:
            kept = self._tails.get(key)
            if kept is not None:
                self._tails.move_to_end(key)
            return kept

    def _keep_tail(self, key: tuple[Any, ...], result: Any) -> None:
        with self._tails_lock:
            self._tails[key] = result
            while len(self._tails) > _TAIL_RESULTS:
                self._tails.popitem(last=False)

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
        column was added lacks that column. Retention may remove the files of an old version,
        and a merge the files it merged, at once (``read(..., version=...)`` follows where
        their rows went: docs/store.md, "Disk").
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


@functools.lru_cache(maxsize=64)
def _schema_of(columns: tuple[str, ...]) -> pa.Schema:
    """The Arrow schema of a series' columns (immutable: shared by every read)."""
    return pa.schema(
        [pa.field(c, TIMESTAMP_TYPE if c == "timestamp" else pa.float64()) for c in columns]
    )


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


def _copy(kept: Any, output: Output) -> Any:
    """A result of ``output`` from a kept tail: a deep copy of a pandas frame (the caller may
    write into it), an Arrow table as is (immutable), a polars frame made from it."""
    if output == "pandas":
        return kept.copy(deep=True)
    return _convert(kept, output)


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
