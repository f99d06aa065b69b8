"""Integrity of segment files: block checksums, verified reads, what reads made kept by name.

A segment's manifest entry lists the XXH3-64 of each CHECKSUM_BLOCK (1 MiB) bytes of the file
(the last block may be shorter). They are computed while the segment is encoded into the file
(:class:`BlockHasher`, no second pass) and checked on every read: a whole-file read checks
every block (:func:`verify_blocks`); a tail of a big segment reads through
:class:`VerifiedFile`, which fetches whole blocks and checks each before pyarrow sees a byte
of it, so it verifies exactly what it reads. Per-block rather than whole-file checksums for
that reason: a tail of a 100 MB segment reads its footer and last batches, a few MiB.
:class:`SegmentCache` keeps verified bytes and decoded tables by name (segments never
change), so repeated reads cost neither round trips nor hashing nor decoding.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import xxhash

from efsray.errors import CorruptionError
from efsray.store.nfs import PositionalReader

if TYPE_CHECKING:
    from efsray.store.segments import Segment

__all__ = [
    "CHECKSUM_BLOCK",
    "BlockHasher",
    "SegmentCache",
    "VerifiedFile",
    "block_count",
    "check_size",
    "verify_blocks",
]

CHECKSUM_BLOCK = 1 << 20  # bytes per checksum: a tail verifies only the blocks it reads


def block_count(size: int) -> int:
    return max(1, -(-size // CHECKSUM_BLOCK))


class BlockHasher:
    """A binary file for pyarrow's writers that passes writes on to ``file`` and hashes the
    bytes block by block (CHECKSUM_BLOCK) as they go, while they are in the CPU cache."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._hasher = xxhash.xxh3_64()
        self._in_block = 0
        self._done: list[str] = []
        self.closed = False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        written = self._file.write(view)
        while view:
            part = view[: CHECKSUM_BLOCK - self._in_block]
            self._hasher.update(part)
            self._in_block += len(part)
            view = view[len(part) :]
            if self._in_block == CHECKSUM_BLOCK:
                self._done.append(self._hasher.hexdigest())
                self._hasher.reset()
                self._in_block = 0
        return written

    def digests(self) -> tuple[str, ...]:
        if self._in_block or not self._done:  # the short last block (or an empty file)
            return (*self._done, self._hasher.hexdigest())
        return tuple(self._done)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self.closed = True  # the caller owns the file

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False


def verify_blocks(path: Path, seg: Segment, data: memoryview, first: int) -> None:
    """Check ``data``, whole blocks of ``seg`` from block ``first`` on, against the manifest."""
    for k in range(-(-len(data) // CHECKSUM_BLOCK)):
        block = data[k * CHECKSUM_BLOCK : (k + 1) * CHECKSUM_BLOCK]
        got = xxhash.xxh3_64_hexdigest(block)
        if got != seg.blocks[first + k]:
            start = (first + k) * CHECKSUM_BLOCK
            raise CorruptionError(
                f"segment {path} does not match its checksum: bytes {start}-"
                f"{start + len(block) - 1} hash to xxh3-64:{got}, its manifest says "
                f"{seg.blocks[first + k]}; the file was damaged after commit: restore it from "
                "a backup, or read a version that does not use it"
            )


class SegmentCache:
    """What reads of segment files produced, by (directory, name, part), least recently used
    first out, at most ``max_bytes`` in all (an entry over a quarter of it is not kept).

    Parts: ``"bytes"``, a file's verified bytes; ``"table"``, the whole file decoded (all
    columns); ``("rg", i)``, row group ``i`` decoded (a tail's); ``"rg-rows"``, the rows of
    each row group (so a tail whose row groups are all here opens nothing).
    A segment never changes once written (a change writes a new file under a new name), so
    an entry never goes stale: a repeated read of the same segments (a backtest polling the
    tail, a sweep re-reading a series) costs no round trip, no hashing and no decoding for
    them. The tables a read returns share these buffers (zero-copy), so the cache costs
    memory only for what callers have dropped. Thread-safe: parallel reads fill it.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[Path, str, Any], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0

    def get(self, directory: Path, name: str, part: Any = "bytes") -> Any:
        """The entry, or None."""
        with self._lock:
            entry = self._entries.get((directory, name, part))
            if entry is None:
                return None
            self._entries.move_to_end((directory, name, part))
            self.hits += 1
            return entry[0]

    def put(
        self, directory: Path, name: str, value: Any, part: Any = "bytes", size: int | None = None
    ) -> None:
        """Keep ``value`` (a pa.Buffer, pa.Table or small tuple); ``size`` defaults to its
        ``size`` or ``nbytes``."""
        if size is None:
            size = int(getattr(value, "size", None) or getattr(value, "nbytes", 0) or 64)
        if size * 4 > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop((directory, name, part), None)
            self._bytes += size - (old[1] if old is not None else 0)
            self._entries[(directory, name, part)] = (value, size)
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    def drop(self, directory: Path, name: str, part: Any = "bytes") -> None:
        """Forget one entry (the bytes of a file once its decoded table is kept)."""
        with self._lock:
            old = self._entries.pop((directory, name, part), None)
            if old is not None:
                self._bytes -= old[1]


def check_size(path: Path, size: int, seg: Segment) -> None:
    if size != seg.bytes:
        raise CorruptionError(
            f"segment {path} has {size} bytes, its manifest says {seg.bytes}; the file was "
            "damaged after commit: restore it from a backup"
        )


class VerifiedFile(io.RawIOBase):
    """A big segment opened for pyarrow's random reads (footer, last batches): each read
    fetches the whole CHECKSUM_BLOCK blocks it touches and verifies them against the
    manifest before returning any byte of them, so a tail checks exactly what it reads."""

    def __init__(self, file: PositionalReader, seg: Segment) -> None:
        super().__init__()
        self._file = file
        self._seg = seg
        self._pos = 0
        self._blocks: dict[int, bytes] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._file.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        end = min(self._pos + len(out), self._file.size)
        if end <= self._pos:
            return 0
        first, last = self._pos // CHECKSUM_BLOCK, (end - 1) // CHECKSUM_BLOCK
        self._fetch(first, last)
        done = 0
        while self._pos < end:
            k = self._pos // CHECKSUM_BLOCK
            block = self._blocks[k]
            start = self._pos - k * CHECKSUM_BLOCK
            take = min(len(block) - start, end - self._pos)
            out[done : done + take] = block[start : start + take]
            done += take
            self._pos += take
        return done

    def _fetch(self, first: int, last: int) -> None:
        """Read and verify the blocks first..last not read yet, in one read per run."""
        k = first
        while k <= last:
            if k in self._blocks:
                k += 1
                continue
            stop = k
            while stop + 1 <= last and stop + 1 not in self._blocks:
                stop += 1
            offset = k * CHECKSUM_BLOCK
            length = min((stop + 1) * CHECKSUM_BLOCK, self._file.size) - offset
            data = self._file.pread(offset, length)
            if len(data) != length:
                check_size(self._file.path, offset + len(data), self._seg)
            if self._seg.blocks:
                verify_blocks(self._file.path, self._seg, memoryview(data), k)
            for j in range(k, stop + 1):
                self._blocks[j] = data[(j - k) * CHECKSUM_BLOCK : (j - k + 1) * CHECKSUM_BLOCK]
            k = stop + 1
