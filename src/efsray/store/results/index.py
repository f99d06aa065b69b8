"""The run index: each run's stored row, found by run id in a few small reads.

A load by id used to read the ``record`` and ``run_id`` columns of the run's whole row group
(2,048 runs, ~186 KB, 7 server operations on the EFS-like mount). A segment written by this
efsray carries, at the end of its sidecar, a run index:

- blocks of ``BLOCK_RUNS`` runs (sorted by run id): each the JSON of those runs' rows
  (``run_id``, ``writer``, ``record``, ``tables`` and the ``table.<name>.*`` byte ranges of
  their tables in the same sidecar), ZSTD-compressed, with its own digest;
- a fence: for every block its first and last run id, offset, size, uncompressed size and
  digest (ZSTD-compressed JSON), whose offset, sizes and digest are in the segment's
  manifest entry (``SidecarEntry.index``).

A load reads the fence once per segment (kept in :data:`FENCES`, by sidecar name and
digest: files never change once committed), then the run's block, then the run's tables
(adjacent in the sidecar), through one open: one open and two reads when the fence is
cached, the two reads alone when the sidecar was read in the last second (its descriptor
is still open: :mod:`efsray.store.results.open_files`). Every range read is checked
against its digest before it is decompressed; the chain of digests starts at the manifest.
Segments written before the index (no ``index`` in their manifest entry) are read through
their Parquet row groups.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from efsray.errors import CorruptionError
from efsray.store.hashing import check, split_digest
from efsray.store.nfs import PositionalReader
from efsray.store.results.cache import PartCache
from efsray.store.results.open_files import OPEN_FILES
from efsray.store.results.records import TABLES, digest

__all__ = ["BLOCK_RUNS", "FENCES", "Fence", "IndexRef", "encode_index", "read_index_rows"]

BLOCK_RUNS = 64  # a block: ~64 runs' records, a few KB compressed; the fence: 1 entry per block
FORMAT = "efsray-run-index/1"
INDEX_COLUMNS = (
    "run_id", "writer", "record", "tables",
    *(f"table.{n}.{c}" for n in TABLES for c in ("offset", "bytes", "rows", "digest")),
)  # fmt: skip
_GAP = 64 << 10  # a run's tables this close together are read in one range


@dataclass(frozen=True, slots=True)
class IndexRef:
    """Where a sidecar's run index starts, and where its fence is: offset, compressed and
    uncompressed size, digest."""

    start: int
    offset: int
    bytes: int
    raw_bytes: int
    digest: str

    def to_json(self) -> list[Any]:
        return [self.start, self.offset, self.bytes, self.raw_bytes, self.digest]

    @classmethod
    def from_json(cls, value: Sequence[Any]) -> IndexRef:
        return cls(int(value[0]), int(value[1]), int(value[2]), int(value[3]), str(value[4]))


@dataclass(frozen=True, slots=True)
class Block:
    first: str
    last: str
    offset: int
    bytes: int
    raw_bytes: int
    digest: str


@dataclass(frozen=True, slots=True)
class Fence:
    """A sidecar's parsed fence: its blocks in run-id order."""

    blocks: tuple[Block, ...]
    firsts: tuple[str, ...]

    def holding(self, run_ids: Iterable[str]) -> list[Block]:
        """The blocks that may hold one of ``run_ids``, in file order."""
        found: dict[int, Block] = {}
        for run_id in run_ids:
            i = bisect.bisect_right(self.firsts, run_id) - 1
            if i >= 0 and self.blocks[i].last >= run_id:
                found[i] = self.blocks[i]
        return [found[i] for i in sorted(found)]


class FenceCache(PartCache[Fence]):
    """Parsed fences by (file name, digest)."""

    def __init__(self, size: int = 1024) -> None:
        super().__init__(size)


FENCES = FenceCache()


def _compress(data: bytes) -> bytes:
    return bytes(pa.compress(data, codec="zstd", asbytes=True))


def _decompress(data: bytes, raw: int, what: str) -> bytes:
    try:
        out = bytes(pa.decompress(data, decompressed_size=raw, codec="zstd", asbytes=True))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptionError(
            f"{what} does not decompress ({exc}); restore it from a backup"
        ) from None
    if len(out) != raw:
        raise CorruptionError(f"{what} decompresses to {len(out)} bytes, not {raw}")
    return out


def encode_index(rows: pa.Table, base: int, algorithm: str) -> tuple[bytes, IndexRef]:
    """The run index of a segment's ``rows`` (sorted by run id), to be written at offset
    ``base`` of its sidecar: (its bytes, where its fence is)."""
    present = [c for c in INDEX_COLUMNS if c in rows.column_names]
    columns = {c: rows.column(c).to_pylist() for c in present}
    parts: list[bytes] = []
    blocks: list[list[Any]] = []
    offset = base
    for start in range(0, rows.num_rows, BLOCK_RUNS):
        stop = min(start + BLOCK_RUNS, rows.num_rows)
        items = [
            {c: columns[c][i] for c in present if columns[c][i] is not None}
            for i in range(start, stop)
        ]
        raw = json.dumps(items, separators=(",", ":")).encode()
        packed = _compress(raw)
        ids = columns["run_id"]
        blocks.append([ids[start], ids[stop - 1], offset, len(packed), len(raw),
                       digest(packed, algorithm)])  # fmt: skip
        parts.append(packed)
        offset += len(packed)
    raw = json.dumps({"format": FORMAT, "blocks": blocks}, separators=(",", ":")).encode()
    fence = _compress(raw)
    parts.append(fence)
    ref = IndexRef(base, offset, len(fence), len(raw), digest(fence, algorithm))
    return b"".join(parts), ref


def _verified(data: bytes, size: int, expected: str, what: str, path: Path) -> None:
    algorithm, _ = split_digest(expected)
    check(what, path, size, expected, len(data), digest(data, algorithm))


def _parse_fence(raw: bytes, what: str) -> Fence:
    try:
        body = json.loads(raw)
        if body.get("format") != FORMAT:
            raise ValueError(f"format {body.get('format')!r}")
        blocks = tuple(Block(str(b[0]), str(b[1]), int(b[2]), int(b[3]), int(b[4]), str(b[5]))
                       for b in body["blocks"])  # fmt: skip
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise CorruptionError(
            f"{what} is not a run index ({exc}); restore it from a backup"
        ) from None
    return Fence(blocks, tuple(b.first for b in blocks))


def read_index_rows(
    path: Path,
    name: str,
    size: int,
    file_digest: str,
    ref: IndexRef,
    run_ids: Sequence[str],
    *,
    tables: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    """The index rows of those of ``run_ids`` that the sidecar at ``path`` (``size`` bytes,
    committed as ``name`` with ``file_digest``) holds, by run id; with ``tables``, also the
    bytes of every table those rows name, by ``run_id/table`` (read in the same open,
    unverified: the caller checks each against its row's digest). One open (none if kept
    open); one read for the fence unless cached; one read per run of adjacent blocks; one
    per run's tables."""
    what = f"run index of sidecar {path}"
    key = (name, file_digest)
    wanted = set(run_ids)

    def once(file: PositionalReader) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
        if file.size != size:
            raise CorruptionError(
                f"sidecar {path} has {file.size} bytes, its manifest says {size}; it was "
                "damaged after commit: restore it from a backup"
            )
        fence = FENCES.get(key)
        if fence is None:
            packed = file.pread(ref.offset, ref.bytes)
            _verified(packed, ref.bytes, ref.digest, f"{what} (fence)", path)
            fence = _parse_fence(_decompress(packed, ref.raw_bytes, what), what)
            FENCES.put(key, fence)
        found: dict[str, dict[str, Any]] = {}
        for run in _adjacent(fence.holding(wanted)):  # one read per run of blocks
            start = run[0].offset
            chunk = file.pread(start, run[-1].offset + run[-1].bytes - start)
            for block in run:
                packed = chunk[block.offset - start : block.offset - start + block.bytes]
                _verified(packed, block.bytes, block.digest,
                          f"{what} (block {block.first})", path)  # fmt: skip
                for row in _parse_block(_decompress(packed, block.raw_bytes, what), what):
                    if row.get("run_id") in wanted:
                        found[str(row["run_id"])] = row
        data: dict[str, bytes] = {}
        if tables:
            for run_id, row in found.items():
                data.update(_table_bytes(file, run_id, row))
        return found, data

    return OPEN_FILES.read(path, once)


def _adjacent(blocks: list[Block]) -> list[list[Block]]:
    """``blocks`` (in file order) in runs of blocks that follow each other in the file."""
    runs: list[list[Block]] = []
    for block in blocks:
        if runs and runs[-1][-1].offset + runs[-1][-1].bytes == block.offset:
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs


def _parse_block(raw: bytes, what: str) -> list[dict[str, Any]]:
    try:
        rows = json.loads(raw)
    except ValueError as exc:
        raise CorruptionError(
            f"{what}: a block is not JSON ({exc}); restore it from a backup"
        ) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise CorruptionError(f"{what}: a block is not a list of rows; restore it from a backup")
    return rows


def _table_bytes(file: PositionalReader, run_id: str, row: Mapping[str, Any]) -> dict[str, bytes]:
    """A run's tables' bytes: one read over all of them (a sidecar written with this index
    keeps a run's tables together)."""
    spans = [(name, int(row[f"table.{name}.offset"]), int(row[f"table.{name}.bytes"]))
             for name in TABLES if row.get(f"table.{name}.offset") is not None]  # fmt: skip
    if not spans:
        return {}
    start = min(o for _, o, _ in spans)
    stop = max(o + n for _, o, n in spans)
    if stop - start > sum(n for _, _, n in spans) + _GAP:  # far apart: one read each
        return {f"{run_id}/{name}": file.pread(o, n) for name, o, n in spans}
    chunk = file.pread(start, stop - start)
    return {f"{run_id}/{name}": chunk[o - start : o - start + n] for name, o, n in spans}
