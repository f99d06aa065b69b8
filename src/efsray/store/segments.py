"""Immutable segment files of a series: writing, reading a range, reading the tail.

A segment holds a contiguous, time-sorted run of bars. Segments are never modified: a
change writes new segments and a new manifest that lists them. Two file formats, told apart
by their suffix, are read; the store writes the one it is configured with:

- ``.parquet``, the default: LZ4, delta-encoded timestamps, byte-stream-split floats, 64
  Ki-row row groups with statistics: 0.56x the bytes of ``.arrow`` for random-walk prices,
  at the cost of decoding; DuckDB reads it natively.
- ``.arrow``, Arrow IPC (Feather v2): record batches of 64 Ki rows, no compression. A read is
  one ``read()`` of the file and then zero-copy: the table's columns are views of the bytes
  read. pyarrow, polars and DuckDB (through pyarrow) read the files directly.

Every read is verified against the block checksums of the segment's manifest entry (see
:mod:`efsray.store.blocks`).

The code is in :mod:`efsray.store.segment_format` (the entry, the formats, writing) and
:mod:`efsray.store.segment_reads` (reading); every name is importable from here."""

from __future__ import annotations

from efsray.store.segment_format import (
    FORMATS,
    ROW_GROUP_ROWS,
    Segment,
    SegmentFormat,
    conform,
    is_segment_name,
    write_segment,
)
from efsray.store.segment_reads import _balanced as _balanced
from efsray.store.segment_reads import _parallel as _parallel
from efsray.store.segment_reads import read_range, read_tail

__all__ = [
    "FORMATS",
    "ROW_GROUP_ROWS",
    "Segment",
    "SegmentFormat",
    "conform",
    "is_segment_name",
    "read_range",
    "read_tail",
    "write_segment",
]
