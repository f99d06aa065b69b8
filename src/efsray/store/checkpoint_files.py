"""The files of one checkpoint version: written into the store, verified, copied out.

A version's files live in their own directory, created fresh for that save and never
modified after: every file is created under its final name (no reader can find the directory
until the version's manifest names it: :func:`efsray.store.nfs.write_new`), fsync'ed once,
and hashed while it is written (:mod:`efsray.store.hashing`). The
manifest that the version log commits afterwards records each file's relative path, size and
digest; a reader checks both while it reads, so a damaged file is reported by name and its
bytes are never returned.
"""

from __future__ import annotations

import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from efsray.errors import (
    CorruptionError,
    InvalidDataError,
    InvalidNameError,
    StorageError,
    storage_error_from,
)
from efsray.store.hashing import (
    CHUNK_SIZE,
    LOCAL_WRITE_SIZE,
    check,
    copy_fd,
    hash_file,
    map_verified,
    read_verified,
    split_digest,
    write_buffer,
)
from efsray.store.nfs import (
    FILE_MODE,
    TEMP_PREFIX,
    BackgroundSyncs,
    discard_tree,
    ensure_dir,
    fsync_dir,
    is_temp_name,
    kind_of,
    list_dir,
    on_nfs,
    opened,
    publish_dir,
    stat_or_none,
    walk,
    write_new,
)

__all__ = [
    "BYTES_NAME",
    "DATA_FILE_MODE",
    "CheckpointFile",
    "copy_out",
    "map_one",
    "read_one",
    "scan_source",
    "verify_tree",
    "write_bytes",
    "write_tree",
]

BYTES_NAME = "checkpoint.bin"
DATA_FILE_MODE = 0o444  # immutable: a process handed the directory (Ray) cannot change it
PARALLEL_FILES = 4  # files in flight at once: overlaps per-file latency (open, fsync, close)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class CheckpointFile:
    """One file of a checkpoint: its path relative to the checkpoint, size and digest."""

    path: str
    bytes: int
    digest: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "bytes": self.bytes, "digest": self.digest}

    @classmethod
    def from_json(cls, entry: Any, where: str) -> CheckpointFile:
        try:
            path, size, digest = str(entry["path"]), int(entry["bytes"]), str(entry["digest"])
        except (KeyError, TypeError, ValueError):
            raise CorruptionError(f"{where} has a malformed file entry {entry!r}") from None
        check_relpath(path, where)
        split_digest(digest)
        return cls(path, size, digest)


def check_relpath(rel: str, where: str) -> str:
    """``rel`` if it is a safe relative path inside a checkpoint, else CorruptionError."""
    parts = PurePosixPath(rel).parts
    if (
        not parts
        or rel.startswith("/")
        or "\\" in rel
        or "\x00" in rel
        or any(p in (".", "..") or is_temp_name(p) for p in parts)
    ):
        raise CorruptionError(f"{where} names an unsafe file path {rel!r}; it was tampered with")
    return rel


# --- writing into the store -------------------------------------------------------------


def write_bytes(
    target: Path, data: bytes | bytearray | memoryview, algorithm: str
) -> list[CheckpointFile]:
    """Write ``data`` as the single file of a bytes checkpoint in ``target``."""
    view = memoryview(data).cast("B")
    digests: list[str] = []

    write_size = _write_size(target)

    def writer(fd: int) -> None:
        digests.append(write_buffer(fd, view, algorithm, write_size=write_size))

    # under its final name: no manifest names ``target`` yet (see write_new); ``target`` is
    # a new directory with a ULID name, so the name is unique without O_EXCL
    write_new(target / BYTES_NAME, writer, mode=DATA_FILE_MODE, unique=True)
    return [CheckpointFile(BYTES_NAME, len(view), digests[-1])]


@dataclass(frozen=True, slots=True)
class SourceFile:
    rel: str
    path: Path
    size: int


def scan_source(source: Path) -> tuple[list[SourceFile], list[str]]:
    """Regular files (symlinks to files are followed) and directories under ``source``."""
    if kind_of(source) != "dir":
        raise InvalidDataError(
            f"checkpoint directory {source} does not exist or is not a directory"
        )
    files: list[SourceFile] = []
    dirs: list[str] = []
    for root, dirnames, filenames in walk(source):  # links are not followed: listed as files
        base = Path(root)
        rel_base = base.relative_to(source)
        for name in dirnames:
            _check_source_name(name, base / name)
            dirs.append((rel_base / name).as_posix())
        for name in filenames:
            path = base / name
            _check_source_name(name, path)
            st = stat_or_none(path)  # follows a symlink to a file
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise InvalidDataError(
                    f"{path} is a symbolic link to a directory; a checkpoint holds "
                    "regular files and directories only: copy the target in instead"
                )
            if st is None or not stat.S_ISREG(st.st_mode):
                raise InvalidDataError(
                    f"{path} is not a regular file (a socket, fifo, device or dangling "
                    "link); a checkpoint holds regular files only"
                )
            files.append(SourceFile((rel_base / name).as_posix(), path, st.st_size))
    files.sort(key=lambda f: f.rel)
    dirs.sort()
    return files, dirs


def _check_source_name(name: str, path: Path) -> None:
    if is_temp_name(name):
        raise InvalidNameError(
            f"{path}: names starting with {TEMP_PREFIX!r} are reserved for efsray's "
            "temporary files (cleanup removes them); rename the file"
        )


def write_tree(
    target: Path, files: Sequence[SourceFile], dirs: Iterable[str], algorithm: str
) -> list[CheckpointFile]:
    """Copy the scanned ``files`` into ``target`` (hashing as they are copied)."""
    for rel in dirs:
        ensure_dir(target / rel)
    syncs = BackgroundSyncs()
    write_size = _write_size(target)

    def one(src: SourceFile) -> CheckpointFile:
        result: list[tuple[int, str]] = []
        try:
            with opened(src.path) as src_fd:
                # under its final name: no manifest names ``target`` yet (see write_new)
                syncs.write_new(
                    target / src.rel,
                    lambda fd: result.append(
                        copy_fd(src_fd, fd, algorithm, size_hint=src.size, write_size=write_size)
                    ),
                    mode=DATA_FILE_MODE,
                    unique=True,  # in a new ULID-named directory
                )
        except StorageError:
            raise  # writing into the store failed, and says so
        except OSError as exc:  # opening or reading the source failed
            raise storage_error_from(exc, "reading checkpoint file", src.path) from exc
        size, digest = result[-1]
        return CheckpointFile(src.rel, size, digest)

    with syncs:
        written = parallel(one, files)
        _make_durable(syncs, target, [f.path for f in written])
    return written


def _write_size(directory: Path) -> int:
    """Bytes per write() call into ``directory``: whole 1 MiB chunks on NFS (one WRITE each
    on the simulator), LOCAL_WRITE_SIZE slices on a local disk (see efsray.store.hashing)."""
    return CHUNK_SIZE if on_nfs(directory.parent) else LOCAL_WRITE_SIZE


def _make_durable(syncs: BackgroundSyncs, root: Path, rels: Sequence[str]) -> None:
    """Wait for the fsyncs of the files just written under ``root`` (each started on the I/O
    threads as soon as its file was written), then fsync their directories."""
    syncs.wait()
    for directory in sorted({(root / rel).parent for rel in rels}):
        fsync_dir(directory)


# --- reading out of the store -------------------------------------------------------------


def read_one(directory: Path, entry: CheckpointFile, what: str) -> bytes:
    """The verified content of one file. FileNotFoundError passes through."""
    return read_verified(directory / entry.path, entry.bytes, entry.digest, what=what)


def map_one(directory: Path, entry: CheckpointFile, what: str) -> memoryview:
    """A verified read-only view of one file (see :func:`map_verified`)."""
    return map_verified(directory / entry.path, entry.bytes, entry.digest, what=what)


def verify_tree(directory: Path, files: Sequence[CheckpointFile], what: str) -> None:
    """Check every file's size and digest in place. FileNotFoundError passes through."""

    def one(entry: CheckpointFile) -> None:
        algorithm, _ = split_digest(entry.digest)
        size, digest = hash_file(directory / entry.path, algorithm)
        check(f"file {entry.path!r} of {what}", directory / entry.path, entry.bytes,
              entry.digest, size, digest)  # fmt: skip

    parallel(one, files)


def copy_out(
    directory: Path,
    files: Sequence[CheckpointFile],
    dirs: Iterable[str],
    dest: Path,
    what: str,
) -> None:
    """Copy a checkpoint's files to ``dest`` (new, or an empty directory), verifying them.

    The copy is assembled in a temporary sibling directory and renamed into place, so
    ``dest`` appears complete or not at all. FileNotFoundError passes through.
    """
    kind = kind_of(dest)
    if kind is not None and (kind != "dir" or list_dir(dest)):
        raise InvalidDataError(
            f"destination {dest} exists and is not an empty directory; choose a new path"
        )
    ensure_dir(dest.parent)
    staging = dest.parent / f"{TEMP_PREFIX}{dest.name[:150]}.{secrets.token_hex(4)}"
    ensure_dir(staging)
    syncs = BackgroundSyncs()
    write_size = _write_size(staging)
    try:
        for rel in dirs:
            ensure_dir(staging / rel)

        def one(entry: CheckpointFile) -> None:
            algorithm, _ = split_digest(entry.digest)
            source = directory / entry.path
            result: list[tuple[int, str]] = []

            def writer(fd: int) -> None:
                result.append(
                    copy_fd(src_fd, fd, algorithm, size_hint=entry.bytes, write_size=write_size)
                )
                check(f"file {entry.path!r} of {what}", source, entry.bytes, entry.digest,
                      *result[-1])  # fmt: skip

            with opened(source) as src_fd:  # ENOENT passes through
                ensure_dir((staging / entry.path).parent)
                # final names inside the staging directory, which is renamed whole below
                syncs.write_new(staging / entry.path, writer, mode=FILE_MODE)

        with syncs:
            parallel(one, files)
            _make_durable(syncs, staging, [f.path for f in files])
        publish_dir(staging, dest)
    except BaseException:
        discard_tree(staging)
        raise


def parallel(func: Callable[[T], R], items: Sequence[T], workers: int = PARALLEL_FILES) -> list[R]:
    """``[func(x) for x in items]`` with up to ``workers`` at once; the first error wins."""
    if len(items) <= 1 or workers <= 1:
        return [func(item) for item in items]
    with ThreadPoolExecutor(min(workers, len(items)), thread_name_prefix="efsray-ckpt") as pool:
        futures = [pool.submit(func, item) for item in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
