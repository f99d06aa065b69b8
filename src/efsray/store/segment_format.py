"""Segment files, their format: the manifest entry of a segment (:class:`Segment`), the two
file formats, encoding and writing a new segment, and conforming decoded tables to a series'
schema. Reading is :mod:`efsray.store.segment_reads`; :mod:`efsray.store.segments` has
both and describes the formats."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from efsray.errors import CorruptionError, InvalidDataError
from efsray.store.blocks import BlockHasher, block_count
from efsray.store.nfs import IMMUTABLE_MODE, BackgroundSyncs, buffered_writer, write_new

SegmentFormat = Literal["arrow", "parquet"]
FORMATS: dict[str, str] = {"arrow": ".arrow", "parquet": ".parquet"}

ROW_GROUP_ROWS = 65_536  # Parquet row group, Arrow record batch


def is_segment_name(name: str) -> bool:
    """True for a segment file's name (either format)."""
    return name.startswith("seg-") and name.endswith(tuple(FORMATS.values()))


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment as a manifest records it. Timestamps are UTC nanoseconds.

    ``blocks``: the XXH3-64 (hex) of each CHECKSUM_BLOCK bytes of the file, in order (the
    last block may be shorter); empty for segments written before checksums existed, which
    are checked by size only (``efsray data verify`` reports them).
    """

    file: str
    rows: int
    bytes: int
    ts_min: int
    ts_max: int
    blocks: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file,
            "rows": self.rows,
            "bytes": self.bytes,
            "ts_min": self.ts_min,
            "ts_max": self.ts_max,
        }
        if self.blocks:
            out["xxh3_64"] = list(self.blocks)
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Segment:
        try:
            blocks = tuple(str(b) for b in d.get("xxh3_64", ()))
            seg = cls(
                str(d["file"]), int(d["rows"]), int(d["bytes"]), int(d["ts_min"]),
                int(d["ts_max"]), blocks,
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CorruptionError(
                f"a manifest has a malformed segment entry {d!r} ({exc}); restore the "
                "manifest from a backup, or read another version"
            ) from None
        if blocks and len(blocks) != block_count(seg.bytes):
            raise CorruptionError(
                f"the manifest entry of segment {seg.file} lists {len(blocks)} checksums "
                f"for {seg.bytes} bytes; restore the manifest from a backup"
            )
        return seg

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


def _encode(table: pa.Table, fmt: str, sink: pa.NativeFile) -> None:
    if fmt == "arrow":
        with ipc.new_file(sink, table.schema) as writer:
            # whole 64 Ki-row batches, however the table happens to be chunked
            writer.write_table(table.combine_chunks(), max_chunksize=ROW_GROUP_ROWS)
    else:  # "parquet" (write_segment checked the format)
        pq.write_table(
            table,
            sink,
            compression="lz4",
            row_group_size=ROW_GROUP_ROWS,
            use_dictionary=False,
            column_encoding=_encodings(table.schema),
            write_statistics=True,
        )


def write_segment(
    directory: Path, table: pa.Table, fmt: str = "arrow", syncs: BackgroundSyncs | None = None
) -> Segment:
    """Write ``table`` (sorted, non-empty) as a new segment file in ``directory``.

    Durable on return, or, with ``syncs``, once ``syncs.wait()`` has returned.
    """
    if fmt not in FORMATS:
        raise InvalidDataError(f"segment format {fmt!r} is not one of {', '.join(FORMATS)}")
    name = f"seg-{uuid.uuid4().hex}{FORMATS[fmt]}"
    size = 0
    blocks: tuple[str, ...] = ()

    def encode_into(fd: int) -> None:
        # Straight into the file, buffer by buffer: encoding into memory first would cost a
        # copy of the whole segment and the page faults of a growing buffer (measured: 15 MB
        # in ~4 ms this way, ~10-35 ms through a BufferOutputStream and one write). Buffered,
        # because a raw file returns short writes (NFS, FUSE) that PythonFile would ignore;
        # big writes go straight through the buffer.
        nonlocal size, blocks
        with buffered_writer(fd) as file:
            hashing = BlockHasher(file)
            _encode(table, fmt, pa.PythonFile(hashing, mode="w"))
            file.flush()
            size = file.tell()
            blocks = hashing.digests()

    # Unreferenced until a manifest names it: created under its final, unique name (a UUID:
    # no O_EXCL needed, which on NFS costs a SETATTR).
    if syncs is None:
        write_new(directory / name, encode_into, mode=IMMUTABLE_MODE, unique=True)
    else:
        syncs.write_new(directory / name, encode_into, mode=IMMUTABLE_MODE, unique=True)
    ts = table.column("timestamp")
    return Segment(
        file=name,
        rows=table.num_rows,
        bytes=size,
        ts_min=ts[0].value,  # UTC nanoseconds
        ts_max=ts[-1].value,
        blocks=blocks,
    )


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
