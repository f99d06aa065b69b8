"""Immutable Parquet segment files of a series: writing, reading a range, reading the tail.

A segment holds a contiguous, time-sorted run of bars. Segments are never modified: a
change writes new segments and a new manifest that lists them. Files are plain Parquet
(LZ4, delta-encoded timestamps, byte-stream-split floats, 64 Ki-row row groups with
statistics), so DuckDB, polars or pyarrow can read a series directly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from efsray.errors import CorruptionError
from efsray.store.nfs import read_bytes, reading, write_new

__all__ = ["ROW_GROUP_ROWS", "Segment", "conform", "read_range", "read_tail", "write_segment"]

ROW_GROUP_ROWS = 65_536
_READ_THREADS = 4
_PARALLEL_BYTES = 16 << 20
_WHOLE_FILE_BYTES = 4 << 20


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment as a manifest records it. Timestamps are UTC nanoseconds."""

    file: str
    rows: int
    bytes: int
    ts_min: int
    ts_max: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "rows": self.rows,
            "bytes": self.bytes,
            "ts_min": self.ts_min,
            "ts_max": self.ts_max,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Segment:
        return cls(
            str(d["file"]), int(d["rows"]), int(d["bytes"]), int(d["ts_min"]), int(d["ts_max"])
        )

    def overlaps(self, start_ns: int | None, end_ns: int | None) -> bool:
        return (start_ns is None or self.ts_max >= start_ns) and (
            end_ns is None or self.ts_min <= end_ns
        )


def _encodings(schema: pa.Schema) -> dict[str, str]:
    enc = {}
    for field in schema:
        if pa.types.is_timestamp(field.type):
            enc[field.name] = "DELTA_BINARY_PACKED"
        elif pa.types.is_floating(field.type):
            enc[field.name] = "BYTE_STREAM_SPLIT"
    return enc


def write_segment(directory: Path, table: pa.Table) -> Segment:
    """Write ``table`` (sorted, non-empty) as a new segment file in ``directory``."""
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression="lz4",
        row_group_size=ROW_GROUP_ROWS,
        use_dictionary=False,
        column_encoding=_encodings(table.schema),
        write_statistics=True,
    )
    buffer = sink.getvalue()
    name = f"seg-{uuid.uuid4().hex}.parquet"
    # Unreferenced until a manifest names it: created under its final, unique name.
    write_new(directory / name, memoryview(buffer))  # type: ignore[arg-type]
    ts = table.column("timestamp")
    return Segment(
        file=name,
        rows=table.num_rows,
        bytes=buffer.size,
        ts_min=ts[0].cast(pa.int64()).as_py(),
        ts_max=ts[-1].cast(pa.int64()).as_py(),
    )


def _load(directory: Path, seg: Segment) -> pa.Buffer:
    data = read_bytes(directory / seg.file)  # FileNotFoundError passes through
    if len(data) != seg.bytes:
        raise CorruptionError(
            f"segment {directory / seg.file} has {len(data)} bytes, its manifest says "
            f"{seg.bytes}; the file was damaged after commit: restore it from a backup"
        )
    return pa.py_buffer(data)


def _decode(
    directory: Path,
    seg: Segment,
    columns: Sequence[str] | None,
    start_ns: int | None,
    end_ns: int | None,
) -> pa.Table:
    buffer = _load(directory, seg)
    filters: list[tuple[str, str, Any]] = []
    if start_ns is not None and seg.ts_min < start_ns:
        filters.append(("timestamp", ">=", pa.scalar(start_ns, pa.timestamp("ns", tz="UTC"))))
    if end_ns is not None and seg.ts_max > end_ns:
        filters.append(("timestamp", "<=", pa.scalar(end_ns, pa.timestamp("ns", tz="UTC"))))
    try:
        pf = pq.ParquetFile(pa.BufferReader(buffer))
        wanted = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
        if not filters:  # arrow's threads pay off from a few row groups on
            return pf.read(columns=wanted, use_threads=seg.rows > 2 * ROW_GROUP_ROWS)
        return pq.read_table(pa.BufferReader(buffer), columns=wanted, filters=filters)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptionError(
            f"segment {directory / seg.file} cannot be decoded as Parquet ({exc}); "
            "restore it from a backup"
        ) from None


def read_range(
    directory: Path,
    segments: Sequence[Segment],
    schema: pa.Schema,
    columns: Sequence[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
) -> pa.Table:
    """Rows of ``segments`` with ``start_ns <= timestamp <= end_ns`` in time order.

    Only segments whose recorded time range overlaps the request are opened. ``schema`` is
    the series' full schema: columns missing from older segments come back as nulls.
    """
    chosen = [s for s in segments if s.overlaps(start_ns, end_ns)]
    if len(chosen) > 1 and sum(s.bytes for s in chosen) > _PARALLEL_BYTES:
        # Big reads: overlap the round trips of several files (EFS latency ~1 ms each).
        with ThreadPoolExecutor(min(_READ_THREADS, len(chosen))) as pool:
            parts = list(
                pool.map(lambda s: _decode(directory, s, columns, start_ns, end_ns), chosen)
            )
    else:  # small reads: thread hand-offs would cost more than they save
        parts = [_decode(directory, s, columns, start_ns, end_ns) for s in chosen]
    return conform(parts, schema, columns)


def read_tail(
    directory: Path,
    segments: Sequence[Segment],
    schema: pa.Schema,
    n: int,
    columns: Sequence[str] | None = None,
) -> pa.Table:
    """The last ``n`` rows, reading only the last row groups of the last segments."""
    parts: list[pa.Table] = []
    remaining = n
    for seg in reversed(segments):
        if remaining <= 0:
            break
        parts.extend(_tail_of(directory, seg, remaining, columns))
        remaining = n - sum(p.num_rows for p in parts)
    parts.reverse()
    table = conform(parts, schema, columns)
    return table.slice(max(0, table.num_rows - n))


def _tail_of(
    directory: Path, seg: Segment, n: int, columns: Sequence[str] | None
) -> list[pa.Table]:
    path = directory / seg.file
    if seg.bytes <= _WHOLE_FILE_BYTES:  # one open and one read beat many seeks
        return _last_row_groups(path, pa.BufferReader(_load(directory, seg)), n, columns)

    def once() -> list[pa.Table]:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size != seg.bytes:
                raise CorruptionError(
                    f"segment {path} has {size} bytes, its manifest says {seg.bytes}; "
                    "the file was damaged after commit: restore it from a backup"
                )
            return _last_row_groups(path, f, n, columns)

    return reading(path, once)


def _last_row_groups(
    path: Path, source: Any, n: int, columns: Sequence[str] | None
) -> list[pa.Table]:
    try:
        pf = pq.ParquetFile(source)
        wanted = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
        parts: list[pa.Table] = []
        got = 0
        for rg in reversed(range(pf.num_row_groups)):
            part = pf.read_row_group(rg, columns=wanted, use_threads=False)
            parts.insert(0, part)
            got += part.num_rows
            if got >= n:
                break
        return parts
    except pa.ArrowInvalid as exc:
        raise CorruptionError(
            f"segment {path} cannot be decoded as Parquet ({exc}); restore it from a backup"
        ) from None


def conform(
    parts: Sequence[pa.Table], schema: pa.Schema, columns: Sequence[str] | None = None
) -> pa.Table:
    """Concatenate parts with exactly the requested columns of ``schema`` (all by default);
    a column a part lacks (an older segment, a batch without an extra column) is null."""
    fields = [f for f in schema if columns is None or f.name in columns]
    target = pa.schema(fields)
    if not parts:
        return target.empty_table()
    aligned = []
    for part in parts:
        if part.schema == target:
            aligned.append(part)
            continue
        cols = [
            part.column(f.name).cast(f.type)
            if f.name in part.column_names
            else pa.nulls(part.num_rows, f.type)
            for f in fields
        ]
        aligned.append(pa.Table.from_arrays(cols, schema=target))
    return pa.concat_tables(aligned)
