"""Segment files, reading them: a range of a series or its tail, each file verified against
the block checksums of its manifest entry (see :mod:`efsray.store.blocks`); big reads
overlap the files on the I/O pool's threads, and whole-segment reads can assemble each
fixed-width column in one buffer."""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from efsray.errors import CorruptionError
from efsray.store.blocks import SegmentCache, VerifiedFile, check_size, verify_blocks
from efsray.store.nfs import PositionalReader, io_pool, read_bytes, reading
from efsray.store.segment_format import ROW_GROUP_ROWS, Segment, conform
from efsray.store.segment_moves import MAX_HOPS, read_move

R = TypeVar("R")

_READ_THREADS = 4
_PARALLEL_BYTES = 16 << 20
_PARALLEL_PARQUET_BYTES = 1 << 20
_WHOLE_FILE_BYTES = 4 << 20


def _load(
    directory: Path, seg: Segment, drop_cache: bool = False, cache: SegmentCache | None = None
) -> pa.Buffer:
    if cache is not None:
        cached = cache.get(directory, seg.file)
        if cached is not None:
            return cached
    # The manifest's size, no fstat (read_bytes) on the read path; without a cache (verify,
    # merges) the file's own size, so that bytes appended after commit show too.
    known = seg.bytes if cache is not None else None
    data = read_bytes(directory / seg.file, drop_cache=drop_cache, size=known)  # ENOENT passes
    check_size(directory / seg.file, len(data), seg)
    if seg.blocks:
        verify_blocks(directory / seg.file, seg, memoryview(data), 0)
    buffer = pa.py_buffer(data)
    if cache is not None and not drop_cache:  # drop_cache: a merge input, read for the last time
        cache.put(directory, seg.file, buffer)
    return buffer


def _decode(
    directory: Path,
    seg: Segment,
    columns: Sequence[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    drop_cache: bool = False,
    cache: SegmentCache | None = None,
    follow: bool = True,
) -> pa.Table:
    """Rows of ``seg`` in [start_ns, end_ns]. With ``cache``, a read of all columns keeps the
    whole file decoded (and drops its bytes): the next read of it decodes nothing. A segment
    missing from ``directory`` is read where a merge moved its rows (with ``follow``)."""
    table = cache.get(directory, seg.file, "table") if cache is not None else None
    if table is None:
        try:
            buffer = _load(directory, seg, drop_cache, cache)
        except FileNotFoundError:  # merged away? (segment_moves)
            if not follow:
                raise
            table = _moved_rows(directory, seg, columns, None, drop_cache, cache)
            return _time_slice(table, seg, start_ns, end_ns)
        keep = cache is not None and not drop_cache and columns is None
        try:
            if seg.file.endswith(".arrow"):
                table = ipc.open_file(pa.BufferReader(buffer)).read_all()  # zero-copy
            elif keep:
                pf = pq.ParquetFile(pa.BufferReader(buffer))
                table = pf.read(use_threads=seg.rows > 2 * ROW_GROUP_ROWS)
            else:  # a projection or a merge input: decode only what is asked
                return _decode_parquet(buffer, seg, columns, start_ns, end_ns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorruptionError(
                f"segment {directory / seg.file} cannot be decoded ({exc}); restore it from a "
                "backup"
            ) from None
        if keep:
            assert cache is not None
            cache.put(directory, seg.file, table, "table")
            cache.drop(directory, seg.file)  # the table holds (arrow) or replaces the bytes
    if columns is not None:
        table = table.select([c for c in table.column_names if c in columns])
    return _time_slice(table, seg, start_ns, end_ns)


def _moved_rows(
    directory: Path,
    seg: Segment,
    columns: Sequence[str] | None,
    last: int | None = None,
    drop_cache: bool = False,
    cache: SegmentCache | None = None,
) -> pa.Table:
    """The rows of ``seg``, a segment missing from ``directory``, read from the segment a
    merge moved them to (its redirect, followed along a chain; :mod:`segment_moves`), or
    only its ``last`` rows. FileNotFoundError naming ``seg`` when it has no redirect."""
    want = None if columns is None else ["timestamp", *[c for c in columns if c != "timestamp"]]
    missing = FileNotFoundError(errno.ENOENT, "segment missing", str(directory / seg.file))
    current, offset = seg, 0
    for _ in range(MAX_HOPS):
        move = read_move(directory, current)
        if move is None:
            raise missing
        current, offset = move.target, offset + move.offset
        skip = seg.rows - last if last is not None else 0
        try:
            table = _rows_of(directory, current, offset + skip, seg.rows - skip, want, cache)
        except FileNotFoundError:
            continue  # moved again: follow its redirect
        ts = table.column("timestamp").cast(pa.int64())
        expected = (seg.rows - skip, seg.ts_max) if skip else (seg.rows, seg.ts_min, seg.ts_max)
        found = (len(ts), ts[-1].as_py()) if skip else (len(ts), ts[0].as_py(), ts[-1].as_py())
        if len(ts) == 0 or found != expected:
            raise CorruptionError(
                f"segment {directory / seg.file} was merged into {directory / current.file}, "
                f"whose rows {offset + skip}-{offset + seg.rows - 1} are not its rows "
                f"({found} instead of {expected}): a damaged redirect; restore it from a "
                "backup, or read the latest version"
            )
        if columns is not None:
            table = table.select([c for c in table.column_names if c in columns])
        if cache is not None and not drop_cache and columns is None and not skip:
            cache.put(directory, seg.file, table, "table")  # they are seg's rows, by name
        return table
    raise CorruptionError(
        f"segment {directory / seg.file} was merged away more than {MAX_HOPS} times over: "
        "its redirects loop; restore them from a backup, or read the latest version"
    )


def _rows_of(
    directory: Path,
    seg: Segment,
    first: int,
    count: int,
    columns: Sequence[str] | None,
    cache: SegmentCache | None,
) -> pa.Table:
    """Rows ``first`` to ``first + count`` of ``seg`` (verified; FileNotFoundError passes):
    a Parquet file's row groups that hold them (a big file read by verified blocks, like a
    tail), an Arrow file decoded whole (zero-copy)."""
    table = cache.get(directory, seg.file, "table") if cache is not None else None
    if table is None and seg.file.endswith(".arrow"):
        table = _decode(directory, seg, None, None, None, cache=cache, follow=False)
    if table is not None:
        part = table.slice(first, count)
        return part if columns is None else part.select(columns)
    path = directory / seg.file

    def read(source: Any) -> pa.Table:
        try:
            pf = pq.ParquetFile(source)
            sizes = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
            starts = np.cumsum([0, *sizes])
            groups = [i for i in range(len(sizes)) if starts[i] < first + count
                      and starts[i + 1] > first]  # fmt: skip
            wanted = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
            part = pf.read_row_groups(groups, columns=wanted, use_threads=len(groups) > 2)
        except (pa.ArrowInvalid, OSError) as exc:
            raise _undecodable(path, exc) from None
        return part.slice(first - int(starts[groups[0]]) if groups else 0, count)

    cached = cache.get(directory, seg.file) if cache is not None else None
    if cached is not None or seg.bytes <= _WHOLE_FILE_BYTES:
        buffer = cached if cached is not None else _load(directory, seg, cache=cache)
        return read(pa.BufferReader(buffer))  # kept: the merge's other inputs are in it too

    def once() -> pa.Table:
        with PositionalReader(path) as file:
            check_size(path, file.size, seg)
            return read(VerifiedFile(file, seg))

    return reading(path, once)


def _cuts(seg: Segment, start_ns: int | None, end_ns: int | None) -> tuple[bool, bool]:
    """Whether [start_ns, end_ns] cuts ``seg`` at its start and at its end."""
    return (
        start_ns is not None and seg.ts_min < start_ns,
        end_ns is not None and seg.ts_max > end_ns,
    )


def _time_slice(
    table: pa.Table, seg: Segment, start_ns: int | None, end_ns: int | None
) -> pa.Table:
    """Rows in [start_ns, end_ns] of a time-sorted table, as a zero-copy slice."""
    lo_needed, hi_needed = _cuts(seg, start_ns, end_ns)
    if not (lo_needed or hi_needed):
        return table
    ts = table.column("timestamp").cast(pa.int64()).to_numpy()
    lo = int(np.searchsorted(ts, start_ns or 0, "left")) if lo_needed else 0
    hi = int(np.searchsorted(ts, end_ns or 0, "right")) if hi_needed else len(ts)
    return table.slice(lo, max(0, hi - lo))


def _decode_parquet(
    buffer: pa.Buffer,
    seg: Segment,
    columns: Sequence[str] | None,
    start_ns: int | None,
    end_ns: int | None,
) -> pa.Table:
    filters: list[tuple[str, str, Any]] = []
    lo_needed, hi_needed = _cuts(seg, start_ns, end_ns)
    if lo_needed:
        filters.append(("timestamp", ">=", pa.scalar(start_ns, pa.timestamp("ns", tz="UTC"))))
    if hi_needed:
        filters.append(("timestamp", "<=", pa.scalar(end_ns, pa.timestamp("ns", tz="UTC"))))
    pf = pq.ParquetFile(pa.BufferReader(buffer))
    wanted = None if columns is None else [c for c in columns if c in pf.schema_arrow.names]
    if not filters:  # arrow's threads pay off from a few row groups on
        return pf.read(columns=wanted, use_threads=seg.rows > 2 * ROW_GROUP_ROWS)
    return pq.read_table(pa.BufferReader(buffer), columns=wanted, filters=filters)


def read_range(
    directory: Path,
    segments: Sequence[Segment],
    schema: pa.Schema,
    columns: Sequence[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    *,
    contiguous: bool = False,
    drop_cache: bool = False,
    cache: SegmentCache | None = None,
) -> pa.Table:
    """Rows of ``segments`` with ``start_ns <= timestamp <= end_ns`` in time order.

    Only segments whose recorded time range overlaps the request are opened. ``schema`` is
    the series' full schema: columns missing from older segments come back as nulls.
    ``contiguous``: a big read of whole segments comes back with its fixed-width columns in
    one buffer each (see :func:`_read_into`), for a caller that converts the table to pandas
    or polars, which would otherwise concatenate the chunks. ``drop_cache``: the files' last
    read for a while (see :func:`~efsray.store.nfs.read_bytes`). ``cache``: segments already
    read (see :class:`SegmentCache`).
    """
    chosen = [s for s in segments if s.overlaps(start_ns, end_ns)]
    big = _parallel(directory, chosen, cache)
    if contiguous and big and not any(any(_cuts(s, start_ns, end_ns)) for s in chosen):
        return _read_into(directory, chosen, schema, columns, cache)
    if big:
        # Big reads: overlap the round trips of several files (EFS latency ~1 ms each).
        parts = _on_threads(
            chosen,
            lambda k: _decode(directory, chosen[k], columns, start_ns, end_ns, drop_cache, cache),
        )
    else:  # small reads: thread hand-offs would cost more than they save
        parts = [
            _decode(directory, s, columns, start_ns, end_ns, drop_cache, cache) for s in chosen
        ]
    return conform(parts, schema, columns)


def _parallel(directory: Path, chosen: Sequence[Segment], cache: SegmentCache | None) -> bool:
    """Whether reading ``chosen`` on several threads pays: more than one file to read and
    decode, and enough work to cover the hand-offs: big files, or Parquet ones, whose
    decoding releases the GIL (and on EFS every file costs ~3 round trips to overlap)."""
    todo = [s for s in chosen if cache is None or cache.get(directory, s.file, "table") is None]
    if len(todo) < 2:
        return False
    size = sum(s.bytes for s in todo)
    parquet = sum(s.bytes for s in todo if s.file.endswith(".parquet"))
    return size > _PARALLEL_BYTES or parquet > _PARALLEL_PARQUET_BYTES


def read_tail(
    directory: Path,
    segments: Sequence[Segment],
    schema: pa.Schema,
    n: int,
    columns: Sequence[str] | None = None,
    cache: SegmentCache | None = None,
) -> pa.Table:
    """The last ``n`` rows, reading only the last row groups of the last segments."""
    parts: list[pa.Table] = []
    remaining = n
    for seg in reversed(segments):
        if remaining <= 0:
            break
        found = _tail_of(directory, seg, remaining, columns, cache)  # in time order
        parts[:0] = found
        remaining -= sum(p.num_rows for p in found)
    table = conform(parts, schema, columns)
    return table.slice(max(0, table.num_rows - n))


def _tail_of(
    directory: Path,
    seg: Segment,
    n: int,
    columns: Sequence[str] | None,
    cache: SegmentCache | None = None,
) -> list[pa.Table]:
    try:
        return _tail_of_file(directory, seg, n, columns, cache)
    except FileNotFoundError:  # merged away? (segment_moves)
        return [_moved_rows(directory, seg, columns, min(n, seg.rows), cache=cache)]


def _tail_of_file(
    directory: Path,
    seg: Segment,
    n: int,
    columns: Sequence[str] | None,
    cache: SegmentCache | None = None,
) -> list[pa.Table]:
    path = directory / seg.file
    if cache is not None:
        table = cache.get(directory, seg.file, "table")
        if table is not None:  # decoded whole by an earlier read: a slice
            part = table.slice(max(0, table.num_rows - n))
            if columns is not None:
                part = part.select([c for c in part.column_names if c in columns])
            return [part]
        found = _cached_row_groups(directory, seg, n, columns, cache)
        if found is not None:
            return found
    cached = cache.get(directory, seg.file) if cache is not None else None
    if cached is not None or seg.bytes <= _WHOLE_FILE_BYTES:  # one read beats many seeks
        buffer = cached if cached is not None else _load(directory, seg, cache=cache)
        return _last_row_groups(directory, seg, pa.BufferReader(buffer), n, columns, cache)

    def once() -> list[pa.Table]:
        with PositionalReader(path) as file:
            check_size(path, file.size, seg)
            return _last_row_groups(directory, seg, VerifiedFile(file, seg), n, columns, cache)

    return reading(path, once)


def _cached_row_groups(
    directory: Path, seg: Segment, n: int, columns: Sequence[str] | None, cache: SegmentCache
) -> list[pa.Table] | None:
    """The last row groups holding ``n`` rows, if an earlier tail left them all decoded."""
    rows = cache.get(directory, seg.file, "rg-rows")
    if rows is None:
        return None
    parts: list[pa.Table] = []
    got = 0
    for i in reversed(range(len(rows))):
        part = cache.get(directory, seg.file, ("rg", i))
        if part is None:
            return None
        parts.insert(0, part if columns is None else part.select(
            [c for c in part.column_names if c in columns]))  # fmt: skip
        got += rows[i]
        if got >= n:
            break
    return parts


def _last_row_groups(
    directory: Path,
    seg: Segment,
    source: Any,
    n: int,
    columns: Sequence[str] | None,
    cache: SegmentCache | None = None,
) -> list[pa.Table]:
    """The last row groups (Parquet) or record batches (Arrow) holding ``n`` rows; with
    ``cache``, Parquet row groups decoded here are kept (all columns) for the next tail."""
    path = directory / seg.file
    try:
        if path.name.endswith(".arrow"):
            reader = ipc.open_file(source)
            count = reader.num_record_batches
            read = reader.get_batch
            names = reader.schema.names
        else:
            pf = pq.ParquetFile(source)
            count = pf.num_row_groups
            names = pf.schema_arrow.names
            keep = cache is not None
            wanted = None if columns is None or keep else [c for c in columns if c in names]
            if cache is not None:
                rows = tuple(pf.metadata.row_group(i).num_rows for i in range(count))
                cache.put(directory, seg.file, rows, "rg-rows", size=64 + 8 * count)

            def read(i: int) -> pa.Table:
                part = pf.read_row_group(i, columns=wanted, use_threads=False)
                if cache is not None:
                    cache.put(directory, seg.file, part, ("rg", i))
                return part

        parts: list[pa.Table] = []
        got = 0
        for i in reversed(range(count)):
            part = read(i)
            if isinstance(part, pa.RecordBatch):
                part = pa.Table.from_batches([part])
            if columns is not None:
                part = part.select([c for c in names if c in columns])
            parts.insert(0, part)
            got += part.num_rows
            if got >= n:
                break
        return parts
    except (pa.ArrowInvalid, OSError) as exc:
        raise _undecodable(path, exc) from None


def _undecodable(path: Path, exc: Exception) -> Exception:
    """What to raise when pyarrow fails on a segment: a failed read (an OSError with an errno:
    ESTALE for :func:`reading` to retry, ENOENT) as it is, else a CorruptionError."""
    if isinstance(exc, OSError) and exc.errno:
        return exc
    return CorruptionError(f"segment {path} cannot be decoded ({exc}); restore it from a backup")


def _read_into(
    directory: Path,
    chosen: Sequence[Segment],
    schema: pa.Schema,
    columns: Sequence[str] | None,
    cache: SegmentCache | None = None,
) -> pa.Table:
    """Whole segments read into one preallocated buffer per fixed-width column.

    Each reader thread takes a run of neighbouring segments (``_on_threads``), decodes each
    file zero-copy and at once copies its columns into place at the segment's row offset
    (known from the manifest) while the bytes are still in the CPU cache: one pass over memory
    instead of a read pass and a concatenation pass. A column that some segment lacks, holds
    nulls in or stores as another type is concatenated from the decoded segments by
    :func:`conform` instead.
    """
    fields = [f for f in schema if columns is None or f.name in columns]
    total = sum(s.rows for s in chosen)
    outputs = {f.name: np.empty(total, _numpy_dtype(f.type)) for f in fields if _fixed(f.type)}
    types = {f.name: f.type for f in fields}
    offsets = np.cumsum([0, *(s.rows for s in chosen)])
    unfit: set[str] = set()

    def one(k: int) -> pa.Table:
        part = _decode(directory, chosen[k], columns, None, None, cache=cache)
        if part.num_rows != chosen[k].rows:
            raise CorruptionError(
                f"segment {directory / chosen[k].file} holds {part.num_rows} rows, its "
                f"manifest says {chosen[k].rows}; restore it from a backup"
            )
        unfit.update(_copy_columns(part, outputs, types, int(offsets[k])))
        return part

    parts = _on_threads(chosen, one)
    arrays = []
    for f in fields:
        if f.name in outputs and f.name not in unfit:
            buffers = [None, pa.py_buffer(outputs[f.name])]
            arrays.append(pa.Array.from_buffers(f.type, total, buffers))
        else:
            arrays.append(conform(parts, schema, [f.name]).column(0).combine_chunks())
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _copy_columns(
    part: pa.Table, outputs: dict[str, np.ndarray], types: dict[str, pa.DataType], offset: int
) -> list[str]:
    """Copy ``part``'s columns into ``outputs`` from row ``offset``; the names it cannot copy
    (missing, with nulls, of another type)."""
    unfit = []
    for name, out in outputs.items():
        column = part.column(name) if name in part.column_names else None
        if column is not None and column.type == types[name] and column.null_count == 0:
            _copy_column(out, offset, column)
        else:
            unfit.append(name)
    return unfit


def _on_threads(chosen: Sequence[Segment], func: Callable[[int], R]) -> list[R]:
    """``[func(k) for k in range(len(chosen))]`` on up to _READ_THREADS threads of the I/O
    pool, each taking a run of neighbouring segments of about equal bytes (a task per
    segment made 20 segments read ~30% slower than 4 of the same bytes)."""
    groups = _balanced(chosen, _READ_THREADS)
    done = io_pool().map(lambda group: [func(k) for k in group], groups)
    return [result for group in done for result in group]


def _balanced(chosen: Sequence[Segment], n: int) -> list[list[int]]:
    """Indexes of ``chosen`` cut into at most ``n`` runs of neighbours of about equal bytes."""
    total = sum(s.bytes for s in chosen)
    groups: list[list[int]] = [[]]
    acc = 0
    for k, seg in enumerate(chosen):
        if groups[-1] and acc >= total * len(groups) / n:
            groups.append([])
        groups[-1].append(k)
        acc += seg.bytes
    return groups


def _fixed(arrow_type: pa.DataType) -> bool:
    return (
        pa.types.is_floating(arrow_type)
        or pa.types.is_integer(arrow_type)
        or pa.types.is_timestamp(arrow_type)
    )


def _copy_column(out: np.ndarray, offset: int, column: pa.ChunkedArray) -> None:
    """Copy a null-free fixed-width column into ``out`` from ``offset`` on."""
    for chunk in column.chunks:
        values = chunk.view(pa.int64()) if pa.types.is_timestamp(chunk.type) else chunk
        out[offset : offset + len(chunk)] = values.to_numpy(zero_copy_only=True)
        offset += len(chunk)


def _numpy_dtype(arrow_type: pa.DataType) -> np.dtype:
    if pa.types.is_timestamp(arrow_type):
        return np.dtype(np.int64)
    return np.dtype(arrow_type.to_pandas_dtype())
