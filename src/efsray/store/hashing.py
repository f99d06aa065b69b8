"""Checksums computed while copying: streaming, chunked, hashing overlapped with the I/O.

Checkpoints are large (GiBs). Hashing after copying would read everything twice; hashing
in the same thread as the copy would add the hash time to the I/O time. Here one thread
moves the bytes (reads and writes release the GIL) while a second one hashes the same
buffers (hashlib and blake3 release the GIL too), so a save or a verified load costs about
max(I/O, hash) instead of their sum, and memory stays at a few chunk buffers. Chunks are
1 MiB: one NFS rsize/wsize RPC per syscall, and small enough that a chunk is still in the
CPU cache when the second thread reads it (8 MiB chunks measured ~2x slower here).

Loading a whole checkpoint into memory is the exception: the result must be one ``bytes``
object, and on this class of machine faulting in fresh pages costs as much as reading them,
so it is read with one ``read`` into its final buffer and hashed afterwards (BLAKE3 on all
cores), rather than read into chunks that would then be copied. ``map_verified`` avoids the
fresh memory altogether: it maps the file's page-cache pages read-only and hashes them in
place (zero copies; a cold 1 GiB load then costs what ``dd of=/dev/null`` does).

Digests are written ``"<algorithm>:<hex>"``. The checksum guards against corruption (a
flipped bit, a torn or misdirected write, a truncated copy), not against an attacker: whoever
can rewrite a file on the share can rewrite its manifest too. So the default is XXH3-128
(the ``xxhash`` package; ~20 GB/s per core here, a 128-bit hash that passes SMHasher), the
kind of checksum storage systems use (ZFS fletcher4, Btrfs xxhash64). BLAKE3 (~4 GB/s per
core) and SHA-256 (~1 GB/s) are available for users who want a cryptographic digest; a
stored digest names its algorithm, so readers verify with whatever the writer used.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

from efsray.errors import CorruptionError, EfsrayError
from efsray.store.nfs import opened, reading

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_ALGORITHM",
    "LOCAL_WRITE_SIZE",
    "Hasher",
    "available_algorithms",
    "check",
    "copy_fd",
    "hash_buffer",
    "hash_file",
    "map_verified",
    "new_hasher",
    "read_verified",
    "split_digest",
    "write_buffer",
]

CHUNK_SIZE = 1 << 20  # 1 MiB: one NFS rsize/wsize RPC, and it stays in the CPU cache
# Writes to a local filesystem go in slices of this size. Measured on this VM (ext4, kernel
# 6.18, 1 GiB in 20 files, page cache dropped first): 1 MiB write() calls took 6.7 s, 256 KiB
# slices of the same 1 MiB reads 2.25 s, 64 KiB 2.4 s (dd conv=fsync: bs=1M 4.6 s, bs=256K
# 1.3 s); the extra time is system time in the page-cache copy (copy_folio_from_iter_atomic),
# likely the allocation of large page-cache folios that a 1 MiB write asks for. On NFS the
# client gathers dirty pages into wsize WRITEs whatever the call size, and each call to the
# simulator is a request: there, writes stay CHUNK_SIZE.
LOCAL_WRITE_SIZE = 256 << 10
_DEPTH = 4  # buffers in the copy ring: being read, written, hashed, and one spare
_SMALL = 256 << 10  # below this, hash inline: a thread hand-off costs more than it saves
_INLINE = {"xxh3-128"}  # ~20 GB/s: hashing a chunk costs less than a hand-off to a thread
_PARALLEL_HASH = 16 << 20  # buffers at least this big are hashed on every core (BLAKE3)


class Hasher(Protocol):
    def update(self, data: Any, /) -> Any: ...
    def hexdigest(self) -> str: ...


def _blake3(threads: int = 1) -> Callable[[], Hasher] | None:
    try:
        from blake3 import blake3
    except ImportError:
        return None
    return lambda: blake3(max_threads=threads)


def _xxh3_128() -> Callable[[], Hasher] | None:
    try:
        from xxhash import xxh3_128
    except ImportError:
        return None
    return xxh3_128


def available_algorithms() -> tuple[str, ...]:
    """The checksum algorithms this host can compute, the default first."""
    optional = (("xxh3-128", _xxh3_128), ("blake3", _blake3))
    return (*(name for name, factory in optional if factory() is not None), "sha256")


DEFAULT_ALGORITHM = available_algorithms()[0]


def new_hasher(algorithm: str) -> Hasher:
    if algorithm == "sha256":
        return hashlib.sha256()
    for name, load, package in (("xxh3-128", _xxh3_128, "xxhash"), ("blake3", _blake3, "blake3")):
        if algorithm == name:
            factory = load()
            if factory is None:
                raise EfsrayError(
                    f"this file's checksum is {name} but the {package} package is not "
                    f"installed on this host; `pip install {package}` (efsray depends on it) "
                    "and retry"
                )
            return factory()
    raise EfsrayError(
        f"unknown checksum algorithm {algorithm!r}; this efsray knows "
        f"{', '.join(available_algorithms())}: upgrade efsray"
    )


def split_digest(digest: str) -> tuple[str, str]:
    algorithm, sep, hexdigest = digest.partition(":")
    if not sep or not hexdigest:
        raise CorruptionError(f"checksum {digest!r} is not '<algorithm>:<hex>'")
    return algorithm, hexdigest


class _Pipeline:
    """Feeds buffers to a hasher in a background thread, in order."""

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self.hasher = new_hasher(algorithm)
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> _Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def submit(self, view: memoryview) -> Future[Any] | None:
        # Order matters: once a chunk went to the thread, every later one must go there too.
        if self._pool is None and (len(view) < _SMALL or self.algorithm in _INLINE):
            self.hasher.update(view)
            return None
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="efsray-hash")
        return self._pool.submit(self.hasher.update, view)

    def digest(self) -> str:
        return f"{self.algorithm}:{self.hasher.hexdigest()}"


def _write_all(fd: int, view: memoryview, size: int = CHUNK_SIZE) -> None:
    """Write ``view`` in calls of at most ``size`` bytes (see LOCAL_WRITE_SIZE)."""
    while view:
        view = view[os.write(fd, view[:size]) :]


def write_buffer(
    fd: int,
    data: bytes | bytearray | memoryview,
    algorithm: str,
    *,
    write_size: int = CHUNK_SIZE,
) -> str:
    """Write ``data`` to ``fd`` while hashing it; return the digest. ``write_size``: bytes
    per write() call (LOCAL_WRITE_SIZE on a local filesystem)."""
    view = memoryview(data).cast("B")
    with _Pipeline(algorithm) as pipe:
        pending: list[Future[Any] | None] = []
        for start in range(0, len(view), CHUNK_SIZE):
            part = view[start : start + CHUNK_SIZE]
            pending.append(pipe.submit(part))  # hashed while it is written, still in cache
            _write_all(fd, part, write_size)
            if len(pending) > 4 * _DEPTH:  # keep the hasher close behind
                _wait(pending.pop(0))
        for future in pending:
            _wait(future)
        return pipe.digest()


def _wait(future: Future[Any] | None) -> None:
    if future is not None:
        future.result()


def hash_buffer(data: bytes | bytearray | memoryview, algorithm: str) -> str:
    """The digest of an in-memory buffer (BLAKE3 on every core when it is large)."""
    if algorithm == "blake3" and len(data) >= _PARALLEL_HASH:
        factory = _blake3(threads=-1)  # blake3.AUTO
        if factory is not None:
            hasher = factory()
            hasher.update(data)
            return f"blake3:{hasher.hexdigest()}"
    hasher = new_hasher(algorithm)
    hasher.update(data)
    return f"{algorithm}:{hasher.hexdigest()}"


def copy_fd(
    src: int,
    dst: int | None,
    algorithm: str,
    *,
    size_hint: int = CHUNK_SIZE,
    write_size: int = CHUNK_SIZE,
) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (or only read it, if ``dst`` is None) while hashing.

    Returns (bytes copied, digest). ``size_hint`` (the expected size) keeps the buffers of
    small files small; ``write_size``: bytes per write() call (see LOCAL_WRITE_SIZE).
    """
    chunk = max(4096, min(CHUNK_SIZE, size_hint + 1))
    buffers = [memoryview(bytearray(chunk)) for _ in range(_DEPTH if size_hint >= _SMALL else 1)]
    pending: list[Future[Any] | None] = [None] * len(buffers)
    total = 0
    with _Pipeline(algorithm) as pipe:
        slot = 0
        while True:
            waiting = pending[slot]
            if waiting is not None:
                waiting.result()  # the hasher is done with this buffer: reuse it
            n = os.readv(src, [buffers[slot]])
            if n == 0:
                break
            part = buffers[slot][:n]
            pending[slot] = pipe.submit(part)
            if dst is not None:
                _write_all(dst, part, write_size)
            total += n
            slot = (slot + 1) % len(buffers)
        for waiting in pending:
            if waiting is not None:
                waiting.result()
        return total, pipe.digest()


def hash_file(path: Path, algorithm: str) -> tuple[int, str]:
    """(size, digest) of the file at ``path``, streamed. FileNotFoundError passes through."""

    def once() -> tuple[int, str]:
        with opened(path) as fd:
            size = os.fstat(fd).st_size
            _advise_sequential(fd)
            return copy_fd(fd, None, algorithm, size_hint=size)

    return reading(path, once)


def read_verified(path: Path, size: int, digest: str, *, what: str) -> bytes:
    """The content of ``path``, checked against ``size`` and ``digest``.

    Raises CorruptionError naming ``what`` (the file as the user knows it) on a mismatch;
    FileNotFoundError passes through.
    """
    algorithm, _ = split_digest(digest)

    def once() -> tuple[bytes, int]:
        with opened(path) as fd:
            _advise_sequential(fd)
            data = os.read(fd, size) if size else b""  # straight into the result's buffer
            parts = [data]
            got = len(data)
            while got < size:  # a short read: rare (signals, >2 GiB files)
                more = os.read(fd, min(size - got, 1 << 30))
                if not more:
                    break
                parts.append(more)
                got += len(more)
            extra = len(os.read(fd, 1))
            return (data if len(parts) == 1 else b"".join(parts)), got + extra

    data, got_size = reading(path, once)
    got_digest = hash_buffer(data, algorithm) if got_size == size else ""
    check(what, path, size, digest, got_size, got_digest)
    return data


def map_verified(path: Path, size: int, digest: str, *, what: str) -> memoryview:
    """A read-only view of ``path`` mapped from the page cache, checked against ``size`` and
    ``digest`` before it is returned (every byte hashed in place, none copied).

    Raises CorruptionError like :func:`read_verified`; FileNotFoundError passes through. The
    view is valid while the file exists; see :meth:`CheckpointStore.map_bytes` for NFS.
    """
    algorithm, _ = split_digest(digest)

    def once() -> tuple[mmap.mmap | None, int]:
        with opened(path) as fd:  # the mapping keeps its own reference to the file
            got = os.fstat(fd).st_size
            if got != size or size == 0:
                return None, got
            return mmap.mmap(fd, size, prot=mmap.PROT_READ), got

    mapped, got_size = reading(path, once)
    if mapped is None:
        check(what, path, size, digest, got_size, hash_buffer(b"", algorithm))
        return memoryview(b"")
    view = memoryview(mapped)
    _advise(mapped, "MADV_SEQUENTIAL")  # read far ahead while hashing
    got_digest = hash_buffer(view, algorithm)
    _advise(mapped, "MADV_NORMAL")  # and keep the pages for the caller
    check(what, path, size, digest, got_size, got_digest)
    return view


def _advise(mapped: mmap.mmap, advice: str) -> None:
    if hasattr(mmap, advice):  # an advice: some platforms lack it, filesystems may refuse
        with contextlib.suppress(OSError):
            mapped.madvise(getattr(mmap, advice))


def check(what: str, path: Path, size: int, digest: str, got_size: int, got_digest: str) -> None:
    """Raise CorruptionError unless (got_size, got_digest) match what the manifest recorded."""
    if got_size != size:
        longer = "longer" if got_size > size else "shorter"
        raise CorruptionError(
            f"{what} ({path}) is {longer} than recorded: {got_size} bytes on disk"
            f"{'+' if got_size > size else ''}, {size} in the manifest; the file was damaged "
            "after it was saved: load another version or restore it from a backup"
        )
    if got_digest != digest:
        raise CorruptionError(
            f"{what} ({path}) does not match its checksum: expected {digest}, got "
            f"{got_digest}; the file was damaged after it was saved: load another version "
            "or restore it from a backup"
        )


def _advise_sequential(fd: int) -> None:
    if hasattr(os, "posix_fadvise"):
        # an advice, not a requirement: some filesystems refuse it
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
