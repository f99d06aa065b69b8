"""Market data, the write path of :class:`efsray.store.market.MarketDataStore`: append,
write and compact as optimistic commits, merging new bars into stored segments and merging
neighbouring segments as appends accumulate."""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from efsray.errors import NotFoundError, StorageError
from efsray.store.bars import CORE_COLUMNS, normalize_bars
from efsray.store.checkpoints import MIN_GRACE_S
from efsray.store.market_reads import MarketReads
from efsray.store.market_types import CommitInfo
from efsray.store.merging import PendingSegments, find_run
from efsray.store.nfs import ensure_dir
from efsray.store.segment_moves import Moves, free_merged
from efsray.store.segments import Segment, conform, read_range, write_segment

log = logging.getLogger("efsray.store")


class MarketWrites(MarketReads):
    """Writing series (part of :class:`efsray.store.market.MarketDataStore`)."""

    free_merged_inputs = True
    """Remove a merge's inputs as soon as its version is committed, leaving redirects that
    older versions' readers follow (:mod:`efsray.store.segment_moves`): the series' disk
    bytes stay near its latest version's instead of near twice that until retention. False
    leaves them to retention (a few round trips less per merge)."""

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
        merges: list[tuple[list[Segment], Moves]] = []  # each attempt's base and merges

        def build(base_version: int, base: dict[str, Any] | None) -> dict[str, Any] | None:
            columns = list(base["columns"]) if base else list(CORE_COLUMNS)
            if bars is not None:
                columns += [c for c in bars.column_names if c not in columns]
            schema = self._schema(columns)
            segments = self._segments(base)
            moves = Moves()
            merges.append((segments, moves))
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
                merged = self._compact_runs(seg_dir, segments, schema, pending, moves, tiered=False)
                if merged == segments:
                    return None
                segments, written, replaced = merged, 0, 0
            if operation != "compact" and self.auto_compact:
                segments = self._compact_runs(
                    seg_dir, segments, schema, pending, moves, tiered=True
                )
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
        if self.free_merged_inputs:  # this process won the commit: the merge is ours to finish
            base, moves = merges[-1]
            free_merged(seg_dir, moves.redirects(base, built[-1]))
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
        moves: Moves,
        *,
        tiered: bool,
    ) -> list[Segment]:
        """Merge neighbours. Tiered: runs of merge_factor same-tier segments (append's
        incremental merging). Not tiered: greedy runs up to max_segment_rows (compact).
        Each merge is noted in ``moves``."""
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
            moves.merged(group, cached[0])
            segments[start:stop] = cached[0]
