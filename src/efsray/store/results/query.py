"""Queries of a results table: which segments to read, which columns, which rows.

A filter is checked against each segment's recorded time range and metric ranges (a
segment that cannot match is never opened), then applied in Arrow to the rows of the
segments read, of which only the columns needed are decoded. Segments are read in parallel
on the store's I/O threads (each read is a round trip on EFS).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from efsray.errors import InvalidDataError
from efsray.store.nfs import io_pool
from efsray.store.results.manifest import SegmentEntry
from efsray.store.results.table import ResultTable
from efsray.store.results.where import Filter

__all__ = ["BASE_COLUMNS", "assemble", "select", "table_frames"]

UTC_MS = pa.timestamp("ms", tz="UTC")
HIDDEN = ("record",)  # columns a query never returns (``info`` and ``load`` decode them)
BASE_COLUMNS = ["run_id", "strategy", "created_at", "writer"]


def table_frames(
    table: ResultTable,
    strategy: str,
    lo: dt.datetime | None,
    hi: dt.datetime | None,
    filters: list[Filter],
    tags: Mapping[str, Any] | None,
    columns: Sequence[str] | None,
    version: int | None,
) -> list[Any]:
    """The rows of ``table`` matching the filters, as pandas frames (one per segment read):
    segments whose recorded ranges cannot match are skipped unread; of the others only the
    needed columns are read (verified) and decoded, and filtered in Arrow."""
    import pyarrow.compute as pc

    manifest = table.manifest(version)
    if manifest is None:
        return []
    lo_ms = None if lo is None else int(lo.timestamp() * 1000)
    hi_ms = None if hi is None else int(hi.timestamp() * 1000)
    chosen = [s for s in manifest.segments if _may_match(s, lo_ms, hi_ms, filters)]
    lo_at = None if lo is None else pa.scalar(lo, UTC_MS)
    hi_at = None if hi is None else pa.scalar(hi, UTC_MS)

    def mask(rows: pa.Table) -> Any:
        tests = [f.mask(rows) for f in filters]
        if lo_at is not None:
            tests.append(pc.greater_equal(rows.column("created_at"), lo_at))
        if hi_at is not None:
            tests.append(pc.less_equal(rows.column("created_at"), hi_at))
        passing = tests[0]
        for test in tests[1:]:
            passing = pc.and_(passing, test)
        return passing

    expr = mask if filters or lo is not None or hi is not None else None
    wanted: list[str] | None = None
    if columns is not None:
        wanted = list(dict.fromkeys([
            *BASE_COLUMNS, *(f"metrics.{c}" for c in columns), *columns,
            *(f"tags.{k}" for k in tags or {}), *(f.column for f in filters),
        ]))  # fmt: skip

    def one(entry: SegmentEntry) -> pa.Table:
        rows = table.read_segment(entry, columns=wanted, filters=expr)
        return rows.drop_columns(
            [c for c in rows.column_names if c in HIDDEN or c.startswith("table.")]
        )

    parts = [one(s) for s in chosen] if len(chosen) <= 2 else list(io_pool().map(one, chosen))
    parts = [t for t in parts if t.num_rows]
    if not parts:
        return []
    # one conversion to pandas for all segments' matches (per segment, its fixed cost was
    # most of a query over a million runs); segments whose params differ in type (JSON text
    # in one, numbers in another) convert one by one and pandas aligns them
    with contextlib.suppress(pa.ArrowInvalid, pa.ArrowTypeError):
        parts = [pa.concat_tables(parts, promote_options="permissive")]
    return [_frame(t, strategy, tags) for t in parts]


def assemble(
    frames: list[Any],
    order: str | None,
    *,
    ascending: bool,
    limit: int | None,
    columns: Sequence[str] | None,
) -> Any:
    """One DataFrame of a query's frames (table and legacy runs): a run in both once,
    ``created_at`` as UTC datetimes, sorted by ``order`` (a column or a metric name) or by
    time, cut to ``limit`` rows and to ``columns``."""
    import pandas as pd

    frames = [f for f in frames if not f.empty]
    if frames:
        frame = pd.concat(frames, ignore_index=True, sort=False)
        if not isinstance(frame["created_at"].dtype, pd.DatetimeTZDtype):  # legacy text
            frame["created_at"] = pd.to_datetime(
                frame["created_at"], utc=True, format="ISO8601"
            )  # (on datetimes already, it costs ~2 us a row: 2 s for a million runs)
        if len(frames) > 1:
            frame = frame.drop_duplicates("run_id", keep="first")
    else:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in BASE_COLUMNS})
    if order is not None:
        column = order if order in frame.columns else f"metrics.{order}"
        if column not in frame.columns and not frame.empty:
            raise InvalidDataError(f"cannot sort by {order!r}: no such column or metric")
        if column in frame.columns:
            frame = frame.sort_values(
                [column, "run_id"], ascending=[ascending, True], na_position="last",
                kind="stable",
            )  # fmt: skip
    elif not frame.empty:
        frame = frame.sort_values(["created_at", "run_id"], kind="stable")
    if limit is not None:
        frame = frame.head(limit)
    if columns is not None:
        frame = frame[[c for c in select(columns, frame.columns) if c in frame.columns]]
    return frame.reset_index(drop=True)


def _frame(rows: pa.Table, strategy: str, tags: Mapping[str, Any] | None) -> Any:
    frame = rows.to_pandas()
    frame.insert(1, "strategy", strategy)
    for key, value in (tags or {}).items():
        column = f"tags.{key}"
        if column not in frame.columns:
            return frame.iloc[0:0]
        frame = frame[frame[column].map(lambda v, want=value: _same_tag(v, want))]
    return frame


def _may_match(
    entry: SegmentEntry, lo_ms: int | None, hi_ms: int | None, filters: list[Filter]
) -> bool:
    if lo_ms is not None and entry.max_created_ms < lo_ms:
        return False
    if hi_ms is not None and entry.min_created_ms > hi_ms:
        return False
    for f in filters:
        bounds = entry.metrics.get(f.metric)
        if bounds is None or not f.may_match(*bounds):
            return False
    return True


def select(columns: Sequence[str], available: Iterable[str]) -> list[str]:
    have = set(available)
    out = ["run_id"]
    for name in columns:
        column = name if name in have else f"metrics.{name}"
        if column not in out:
            out.append(column)
    return out


def _same_tag(value: Any, want: Any) -> bool:
    item = getattr(value, "item", None)
    if callable(item):
        value = item()
    if value is None or (isinstance(value, float) and value != value):
        return False
    return (bool(value == want) and type(value) is type(want)) or (
        isinstance(want, int | float) and not isinstance(want, bool)
        and isinstance(value, int | float) and not isinstance(value, bool) and value == want
    )  # fmt: skip
