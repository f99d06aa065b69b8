"""Reading a part of a segment: the column chunks of some columns in some row groups.

A query of five columns over a million runs, or one run by id, needs a small part of each
segment it opens; reading every segment whole moved the ``record`` column (half of the
bytes) and every other column on every query. So a segment written by this efsray carries,
in its manifest entry, the size and digest of its Parquet footer (``SegmentEntry.footer``),
and every Parquet page carries a CRC-32 (``write_page_checksum``). A part is read as:

1. the footer: one read of exactly its bytes (its offset is the file size minus its size),
   verified against the manifest's digest, parsed, and kept in :data:`FOOTERS` by segment
   name and digest (segments never change), so later reads of that segment skip it;
2. the byte ranges of the wanted column chunks of the wanted row groups (from the footer),
   neighbours closer than ``COALESCE_GAP`` merged, each one read (``pread``) through one
   open file (kept open for a second after: :mod:`efsray.store.results.open_files`);
3. those bytes placed at their offsets in a buffer the file's size, handed to pyarrow with
   page checksum verification on: every page decoded is checked, and no byte outside the
   ranges read is ever looked at.

Segments without a footer entry (written before it) are read whole and verified whole.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from efsray.errors import CorruptionError
from efsray.store.hashing import check, split_digest
from efsray.store.nfs import PositionalReader
from efsray.store.results.cache import PartCache
from efsray.store.results.format import DICTIONARY_COLUMNS, groups_holding
from efsray.store.results.manifest import SegmentEntry
from efsray.store.results.open_files import OPEN_FILES
from efsray.store.results.records import digest

__all__ = ["COALESCE_GAP", "FOOTERS", "Footer", "FooterCache", "footer_of", "read_part"]

COALESCE_GAP = 64 << 10  # bytes: a gap smaller than this costs less to read than a round trip
_MAGIC = b"PAR1"


def footer_of(segment: bytes) -> bytes:
    """The footer of an encoded segment: its metadata, their length and the magic."""
    size = struct.unpack("<I", segment[-8:-4])[0] + 8
    if segment[-4:] != _MAGIC or size > len(segment) - 4:
        raise CorruptionError("an encoded segment has no Parquet footer (an efsray bug)")
    return segment[-size:]


@dataclass(frozen=True, slots=True)
class Footer:
    """A segment's parsed footer: its metadata and its column names in file order."""

    metadata: pq.FileMetaData
    names: tuple[str, ...]
    # (start, stop) of every column chunk, by row group then column (taken from the
    # metadata once: its Python accessors cost ~0.5 ms a segment on every query)
    chunks: tuple[tuple[tuple[int, int], ...], ...] = ()

    def groups_holding(self, run_ids: Sequence[str]) -> list[int]:
        return groups_holding(self.metadata, self.names, run_ids)

    def ranges(self, groups: Sequence[int], columns: Sequence[str]) -> list[tuple[int, int]]:
        """(offset, length) of the wanted column chunks, neighbours merged."""
        indexes = [self.names.index(c) for c in columns]
        spans = sorted(self.chunks[g][i] for g in groups for i in indexes)
        merged: list[list[int]] = []
        for start, stop in spans:
            if merged and start - merged[-1][1] <= COALESCE_GAP:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        return [(a, b - a) for a, b in merged]


class FooterCache(PartCache[Footer]):
    """Parsed footers by (file name, digest)."""

    def __init__(self, size: int = 4096) -> None:
        super().__init__(size)


FOOTERS = FooterCache()


def _parse_footer(raw: bytes, what: str) -> Footer:
    try:
        metadata = pq.read_metadata(pa.BufferReader(_MAGIC + raw))
        names = tuple(metadata.schema.to_arrow_schema().names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptionError(
            f"{what}: its footer is unreadable ({exc}); restore it from a backup"
        ) from None
    return Footer(metadata, names, tuple(_chunks(metadata, len(names))))


def _chunks(metadata: pq.FileMetaData, columns: int) -> Iterator[tuple[tuple[int, int], ...]]:
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        spans = []
        for i in range(columns):
            chunk = group.column(i)
            start = chunk.data_page_offset
            if chunk.has_dictionary_page and 0 < chunk.dictionary_page_offset < start:
                start = chunk.dictionary_page_offset
            spans.append((start, start + chunk.total_compressed_size))
        yield tuple(spans)


def _plan(
    footer: Footer, columns: Sequence[str] | None, run_ids: Sequence[str] | None
) -> tuple[list[int], list[str]]:
    groups = (list(range(footer.metadata.num_row_groups)) if run_ids is None
              else footer.groups_holding(sorted(run_ids)))  # fmt: skip
    names = set(footer.names)
    return groups, list(footer.names) if columns is None else [c for c in columns if c in names]


def read_part(
    path: Path,
    entry: SegmentEntry,
    columns: Sequence[str] | None,
    run_ids: Sequence[str] | None,
) -> tuple[pq.ParquetFile, list[int], list[str]]:
    """The segment at ``path`` (committed as ``entry``, which has a footer) as a ParquetFile
    that holds the bytes of ``columns`` (None: all; names it lacks are left out) in the row
    groups that may hold ``run_ids`` (None: all); with those row groups and columns. One
    open (none if kept open), one read for the footer unless cached, one read per
    coalesced range."""
    assert entry.footer is not None
    size, expected = entry.footer
    what = f"segment {path}"
    key = (entry.name, entry.digest)

    def once(file: PositionalReader) -> tuple[Footer, bytearray, tuple[list[int], list[str]]]:
        if file.size != entry.bytes:
            raise CorruptionError(
                f"{what} has {file.size} bytes, its manifest says {entry.bytes}; it was "
                "damaged after commit: restore it from a backup"
            )
        footer = FOOTERS.get(key)
        raw = b""
        if footer is None:
            raw = file.pread(entry.bytes - size, size)
            algorithm, _ = split_digest(expected)
            check("footer of a results segment", path, size, expected, len(raw),
                  digest(raw, algorithm))  # fmt: skip
            footer = _parse_footer(raw, what)
        buffer = bytearray(entry.bytes)
        plan = _plan(footer, columns, run_ids)
        for offset, length in footer.ranges(*plan):
            data = file.pread(offset, length)
            if len(data) != length:
                raise CorruptionError(
                    f"{what} ended early (a read at {offset} got {len(data)} of {length} "
                    "bytes); restore it from a backup"
                )
            buffer[offset : offset + length] = data
        if raw:
            buffer[entry.bytes - size :] = raw
            FOOTERS.put(key, footer)
        return footer, buffer, plan

    footer, buffer, (groups, wanted) = OPEN_FILES.read(path, once)
    source = pq.ParquetFile(
        pa.BufferReader(pa.py_buffer(buffer)), metadata=footer.metadata,
        page_checksum_verification=True, pre_buffer=False,  # in memory already
        read_dictionary=DICTIONARY_COLUMNS,  # see decode_rows: plain again after the filter
    )  # fmt: skip
    return source, groups, wanted
