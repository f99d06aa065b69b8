"""The NFS commit protocol: every byte the store writes goes through this module.

Read top to bottom, it is the whole story of how efsray stays correct on EFS (NFSv4.1,
close-to-open consistency, no trustworthy locks, caches that hide other hosts' new files for
up to a minute) and on any local POSIX filesystem.

1. **Temporary files.** Data is first written under a temporary name in the destination
   directory: ``.efsray-tmp.<final>.<host>.<pid>.<64 random bits>``, a name no other writer
   can pick (so created without O_EXCL, which costs a SETATTR on NFS), written fully,
   fsync'ed, and closed with close()'s result checked (NFS reports deferred write errors
   there). A writer killed at any instant leaves at most such a file; it is never
   visible under a real name, and ``is_temp_name`` lets cleanup find it. Data files that no
   reader can find until a manifest names them are created under their final names instead
   (``write_new``), and their fsyncs may run in the background (``BackgroundSyncs``) while
   the writer goes on: the manifest is published only after all of them have returned.

2. **Publish by rename** (``atomic_write``): rename() within a directory is atomic on NFS and
   replaces the target, so a reader sees the old file or the new one, never a mix. Used for
   files replaced whole under a known name (the connector's sync state; a directory, such as a
   checkpoint copied out, with ``publish_dir``). A *hint* (HEAD), which a reader checks
   before trusting, is instead overwritten in place (``overwrite_hint``): one
   small write at offset 0, about 40 times cheaper than a new file and a rename, and on NFS
   three round trips instead of five.

3. **Create if absent** (``create_exclusive``): link(temp, final) fails with EEXIST atomically
   on the server, so of many hosts racing to create one name exactly one wins, and the
   winner's file is complete the moment it appears. (renameat2 with RENAME_NOREPLACE would
   be the local-filesystem way; NFS rejects it with EINVAL.) If the reply to a successful
   link is lost and the retransmission answers EEXIST, our temp file's link count is 2:
   that is a win too. ``link_all`` links one temporary file under several names, each
   create-if-absent: a merge's redirects, one record found under each merged-away
   segment's name (``<segment>.moved``, checksummed like a manifest, 5.), written after
   the merge's version is committed and before its inputs are removed (6.), so a reader of
   an older version that finds a segment gone finds where its rows are now.

4. **Reads retry ESTALE**: a file replaced or removed by another host fails the next read
   with ESTALE; we re-open by name and read again.

5. **The version log** (``VersionLog``): every committed change of a series or a model is a
   JSON manifest ``versions/<shard>/v<version>.json`` created with ``create_exclusive``.
   Version N+1 can only be created by one writer, so versions never fork and never have
   gaps; a writer that loses the race re-reads version N+1, rebuilds its change on top of
   it, and tries N+2 (optimistic concurrency, no locks). ``HEAD`` holds a recent version
   number as a hint, overwritten in place at version 1 and every 4th version after (a
   reader steps forward from it by lookups); readers start there and probe forward by name
   (an open by name goes to the server under close-to-open consistency, unlike a directory
   listing), so finding the latest version costs a constant number of round trips however
   long the history is. A failed probe leaves a negative lookup in the client's cache (an NFS
   negative dentry, trusted until the directory's attributes expire), so a reader first opens
   the version's directory (``VersionLog._revalidate``: one GETATTR on NFS), which makes the
   client drop the negative lookups of a directory that changed. Should HEAD still name a
   version this client cannot open, readers fall back to the newest version that does open
   (``VersionLog._fallback``), never to none.

   Each manifest carries its own checksum as its first field,
   ``{"checksum":"xxh3-64:<16 hex>",...``: the XXH3-64 of every byte after that field, so a
   reader verifies the exact bytes it read before trusting any of them (``_parse``; a flipped
   bit, a hand edit or a torn copy is a CorruptionError naming the file). Manifests written
   before checksums existed begin ``{"format":`` and are read unverified; ``VersionLog.verified``
   tells them apart for ``verify`` commands. Whatever else a manifest begins with is corrupt.

6. **Removal** (retention) goes through here too (``remove_file``, ``remove_tree``), and so do
   the few other calls the store makes (``lstat_or_none``, ``opened``, ``publish_dir``): no
   other module of the store touches the filesystem (a test scans their code for it). What
   may be removed, and when, is retention's business; that a version never names a file
   removed before its commit is the writer's, which looks for its files in ``before_link``.
   One removal is the writer's own: the inputs of a merge it committed, each once its
   redirect is linked (3.) and synced, so that no version loses a row it names.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import json
import logging
import os
import random
import secrets
import shutil
import socket
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import xxhash

from efsray.errors import (
    CommitConflictError,
    CorruptionError,
    StorageError,
    VersionNotFoundError,
    storage_error_from,
)

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "IMMUTABLE_MODE",
    "TEMP_PREFIX",
    "BackgroundSyncs",
    "ManifestCache",
    "PositionalReader",
    "VersionLog",
    "atomic_write",
    "buffered_writer",
    "checksum_problem",
    "checksummed_json",
    "committed_time",
    "create_exclusive",
    "discard_tree",
    "ensure_dir",
    "fsync_dir",
    "io_pool",
    "is_temp_name",
    "kind_of",
    "link_all",
    "list_dir",
    "list_subdirs",
    "lstat_or_none",
    "on_nfs",
    "opened",
    "overwrite_hint",
    "publish_dir",
    "read_bytes",
    "read_range",
    "reading",
    "remove_empty_dir",
    "remove_file",
    "remove_tree",
    "retry_estale",
    "stat_or_none",
    "tree_stats",
    "walk",
    "write_new",
    "write_temp",
]

log = logging.getLogger("efsray.store")

# Group-writable: every container of the cluster may run as a different uid in one group;
# under an EFS access point all of them are mapped to the access point's fixed uid/gid.
FILE_MODE = 0o664
# Files that never change once written (segments, manifests): read-only for everyone, so a
# stray writer cannot change them, and (with the usual umask 022) created with their final
# mode, saving the fchmod's SETATTR round trip on NFS. Removal needs the directory's write
# permission only.
IMMUTABLE_MODE = 0o444
DIR_MODE = 0o2775  # setgid: new entries inherit the directory's group
TEMP_PREFIX = ".efsray-tmp."
ESTALE_ATTEMPTS = 5
_HOST = socket.gethostname().split(".")[0][:32] or "host"

T = TypeVar("T")
Writer = Callable[[int], None]
"""Writes the payload to an open file descriptor (used for data too big for memory)."""


# --- 1. temporary files -----------------------------------------------------------------


def is_temp_name(name: str) -> bool:
    """True for a name this module gives to a not-yet-published file."""
    return name.startswith(TEMP_PREFIX)


def _temp_path(final: Path) -> Path:
    token = secrets.token_hex(8)  # 64 random bits: created without O_EXCL (_create_written)
    # Keep the whole name under NAME_MAX (255) whatever the final name's length.
    return final.with_name(f"{TEMP_PREFIX}{final.name[:150]}.{_HOST}.{os.getpid()}.{token}")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _create_written(
    path: Path, payload: bytes | Writer, mode: int, *, exclusive: bool = True
) -> int:
    """Create ``path`` (O_EXCL unless not ``exclusive``) and write ``payload``; the open
    descriptor, for :func:`_finish`. On any error the file is removed and a StorageError is
    raised.

    ``exclusive=False`` is for names that carry at least 64 random bits (temporary files):
    no other writer can pick them, and the Linux NFS client follows an exclusive create
    (NFSv4.1 EXCLUSIVE4_1) with a SETATTR for the attributes the server did not take with it
    (one more round trip per file, measured on the guests against nfs-ganesha)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else 0)
    try:
        try:
            fd = os.open(path, flags, mode)
        except FileNotFoundError:
            if str(path.parent) not in _DIRS_SEEN:
                raise
            _forget_dirs(path.parent)  # removed since it was seen: make it again
            ensure_dir(path.parent)
            fd = os.open(path, flags, mode)
    except OSError as exc:
        raise storage_error_from(exc, "creating", path) from exc
    try:
        if mode & _umask():  # explicit mode, whatever the umask (a SETATTR round trip on NFS)
            os.fchmod(fd, mode)
        if callable(payload):
            payload(fd)
        else:
            _write_all(fd, payload)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.close(fd)
        _unlink_quietly(path)
        if isinstance(exc, OSError):
            raise storage_error_from(exc, "writing", path) from exc
        raise
    return fd


def _finish(fd: int, path: Path, fsync: bool) -> None:
    """fdatasync ``fd`` (with ``fsync``) and close it, close's result checked; on an error
    the file is removed and a StorageError is raised."""
    try:
        try:
            if fsync:
                os.fdatasync(fd)  # data and size; the timestamps need not be durable
        finally:
            os.close(fd)  # raises if NFS reports a deferred write error
    except OSError as exc:
        _unlink_quietly(path)
        raise storage_error_from(exc, "writing", path) from exc


@functools.cache
def _umask() -> int:
    """The process's umask, read once without changing it (``os.umask`` can only set it, and
    setting and restoring it races other threads creating files); 0o777 where it cannot be
    read, so that every file gets its fchmod. A process that changes its umask after its
    first store write should not: the store's files would keep the first one's modes."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


def write_temp(
    final: Path, payload: bytes | Writer, *, mode: int = FILE_MODE, fsync: bool = True
) -> Path:
    """Write ``payload`` to a new temporary file beside ``final``; return its path.

    On return close() succeeded and, with ``fsync`` (the default), the data is on stable
    storage. On any error the temporary file is removed and a :class:`StorageError` (or
    StorageFullError) is raised.
    """
    tmp = _temp_path(final)
    _finish(_create_written(tmp, payload, mode, exclusive=False), tmp, fsync)
    return tmp


def write_new(
    final: Path, payload: bytes | Writer, *, mode: int = FILE_MODE, unique: bool = False
) -> None:
    """Create ``final`` (which must not exist) with ``payload``, durably.

    Only for files no reader can find until a manifest names them (immutable data files
    with unique names): the manifest's commit is their publication, so a temporary name
    and a rename would buy nothing but two round trips. A writer killed midway leaves an
    unreferenced file, which cleanup removes after its grace period. The fsync of a newly
    created file also makes its name durable (ext4, XFS, btrfs; NFS creates are synchronous
    on the server), so no directory sync is needed before the manifest that names it.
    :meth:`BackgroundSyncs.write_new` does the same with the fsync in the background, for a
    writer of several files.

    ``unique``: the name carries at least 64 random bits (a segment's UUID, a file in a new
    checkpoint's ULID-named directory), so it is created without O_EXCL (see
    :func:`_create_written`: on NFS a round trip less).
    """
    _finish(_create_written(final, payload, mode, exclusive=not unique), final, True)


_IO_THREADS = 8
_io_pool: ThreadPoolExecutor | None = None


def io_pool() -> ThreadPoolExecutor:
    """The process's threads for blocking file I/O (fsyncs, reads of many files), started
    once instead of per call. Submit to it only from outside it: a task that waited for
    another task of the pool could wait forever once every thread does the same."""
    global _io_pool  # created on first use, once per process
    if _io_pool is None:
        _io_pool = ThreadPoolExecutor(_IO_THREADS, thread_name_prefix="efsray-io")
    return _io_pool


def _forget_io_pool() -> None:
    global _io_pool  # a forked child has none of the parent's threads
    _io_pool = None


os.register_at_fork(after_in_child=_forget_io_pool)


class BackgroundSyncs:
    """New files whose fsync and close run in the background while their writer goes on.

    A commit creates its data files with :meth:`write_new`, which returns once the bytes are
    written, and calls :meth:`wait` before it publishes the manifest that names them
    (``create_exclusive``'s ``before_link``). Each file's fdatasync and close (on NFS, where
    its data goes to the server: the WRITE and COMMIT round trips) then run on the I/O threads,
    overlapping one another and the writing of the manifest instead of following one another:
    appends 1.13-1.18x faster on the benchmark's disk. Used as a context manager, it also waits
    for what an aborted commit left running (ignoring their errors: the abort's error is the
    one that matters, and cleanup removes the unpublished files).
    """

    def __init__(self) -> None:
        self._pending: list[Future[None]] = []

    def write_new(
        self, final: Path, payload: bytes | Writer, *, mode: int = FILE_MODE, unique: bool = False
    ) -> None:
        """:func:`write_new`, durable once :meth:`wait` has returned."""
        fd = _create_written(final, payload, mode, exclusive=not unique)
        self._pending.append(io_pool().submit(_finish, fd, final, True))

    def wait(self) -> None:
        """Return once every file of :meth:`write_new` is durable; raise the first failure (a
        :class:`StorageError`) after all of them have finished."""
        pending, self._pending = self._pending, []
        error: BaseException | None = None
        for future in pending:
            try:
                future.result()
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the rest
                error = error or exc
        if error is not None:
            raise error

    def __enter__(self) -> BackgroundSyncs:
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            self.wait()


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # leave it to cleanup, but say so
        log.warning("could not remove temporary file %s: %s (cleanup will)", path, exc)


def kind_of(path: Path) -> str | None:
    """ "dir", "file" (anything else that exists) or None when absent.

    Unlike ``Path.exists()``, an I/O error (EIO, ESTALE that does not clear, EACCES) is a
    :class:`StorageError`, never mistaken for absence.
    """
    try:
        st = retry_estale(lambda: os.stat(path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise storage_error_from(exc, "checking", path) from exc
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def list_dir(path: Path) -> list[str]:
    """Names in ``path`` ([] when it does not exist); I/O errors are StorageErrors.

    A listing may lag other hosts' newest entries by the NFS attribute-cache time: use it
    to find old things, never to find the newest one.
    """
    try:
        return retry_estale(lambda: os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        raise storage_error_from(exc, "listing", path) from exc


def _scan(top: Path | str, *, follow_symlinks: bool) -> tuple[list[str], list[str]] | None:
    """(subdirectory names, other names) of ``top``; None when it does not exist. Entry types
    come free with the listing (d_type; NFS READDIRPLUS), a stat only where the filesystem
    gives none. Any error other than absence is a StorageError."""
    try:
        entries = retry_estale(lambda: list(os.scandir(top)))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise storage_error_from(exc, "listing", top) from exc
    dirs: list[str] = []
    files: list[str] = []
    for entry in entries:
        try:
            is_dir = retry_estale(functools.partial(entry.is_dir, follow_symlinks=follow_symlinks))
        except FileNotFoundError:
            continue  # removed meanwhile
        except OSError as exc:
            raise storage_error_from(exc, "checking", entry.path) from exc
        (dirs if is_dir else files).append(entry.name)
    return dirs, files


def list_subdirs(path: Path) -> list[str]:
    """Names of the directories in ``path`` ([] when it does not exist), without a round trip
    per entry; like :func:`list_dir`, it may lag other hosts' newest entries."""
    scanned = _scan(path, follow_symlinks=True)
    return [] if scanned is None else scanned[0]


def walk(top: Path | str, *, topdown: bool = True) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk`` for the store: each directory is listed with ESTALE retries; one removed
    meanwhile is skipped; any other error is a StorageError (``os.walk`` would skip the
    directory silently, and a cleanup would report success with work left undone). With
    ``topdown``, removing names from the yielded directory list prunes the walk."""
    scanned = _scan(top, follow_symlinks=False)
    if scanned is None:
        return
    dirs, files = scanned
    if topdown:
        yield str(top), dirs, files
    for name in dirs:
        yield from walk(os.path.join(top, name), topdown=topdown)
    if not topdown:
        yield str(top), dirs, files


def ensure_dir(path: Path, *, mode: int = DIR_MODE, fresh: bool = False) -> None:
    """Create ``path`` and missing parents with an explicit mode; existing ones are fine.

    ``fresh``: ``path`` is a new, unique name (a checkpoint's data directory): try to create
    it first instead of looking for it first, a round trip less.
    """
    if fresh:
        try:
            os.mkdir(path, mode)
        except OSError:
            pass  # exists, or a parent is missing: the general way below
        else:
            _chmod_dir(path, mode)
            return
    if str(path) in _DIRS_SEEN:
        return
    if len(_DIRS_SEEN) > _DIRS_SEEN_MAX:
        _DIRS_SEEN.clear()
    if kind_of(path) == "dir":
        _DIRS_SEEN.add(str(path))
        return
    ensure_dir(path.parent, mode=mode)
    try:
        try:
            os.mkdir(path, mode)
        except FileNotFoundError:
            if str(path.parent) not in _DIRS_SEEN:
                raise
            _forget_dirs(path.parent)  # removed since it was seen: make it again
            ensure_dir(path.parent, mode=mode)
            os.mkdir(path, mode)
    except FileExistsError:
        if kind_of(path) != "dir":
            raise StorageError(
                errno.ENOTDIR, f"{path} exists and is not a directory; move it away", str(path)
            ) from None
        _DIRS_SEEN.add(str(path))
        return
    except OSError as exc:
        raise storage_error_from(exc, "creating directory", path) from exc
    _chmod_dir(path, mode)
    _DIRS_SEEN.add(str(path))


# Directories ensure_dir has seen exist, in this process: the store never removes a directory
# it writes into while writers may run, so asking again would only cost a round trip
# (a LOOKUP or GETATTR once the attribute cache expires). If one is removed anyway (by hand,
# or a whole model deleted), the next create or mkdir in it fails with ENOENT, and the caller
# forgets it, makes it again and retries once.
_DIRS_SEEN: set[str] = set()
_DIRS_SEEN_MAX = 10_000


def _forget_dirs(path: Path) -> None:
    """Forget ``path`` and its parents: one of them was removed since ensure_dir saw it."""
    for gone in (path, *path.parents):
        _DIRS_SEEN.discard(str(gone))


def forget_tree(root: Path) -> None:
    """Forget every directory ensure_dir has seen in ``root`` (and ``root``'s parents): for
    creating a store's tree, which must look again (the tree may have been removed and made
    anew by another process since this one saw it)."""
    _forget_dirs(root)
    prefix = str(root).rstrip("/") + "/"
    for seen in [d for d in _DIRS_SEEN if d.startswith(prefix)]:
        _DIRS_SEEN.discard(seen)


def _chmod_dir(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)  # explicit mode, whatever the umask (and setgid)
    except OSError as exc:  # e.g. an access point that maps ownership: the dir still works
        log.debug("could not chmod %s to %o: %s", path, mode, exc)


def fsync_dir(path: Path) -> None:
    """Make a rename/link in ``path`` durable on local filesystems; nothing on NFS.

    On NFS the server has committed a CREATE, LINK, RENAME or REMOVE to stable storage before
    it replies (EFS stores it in several zones first), and the Linux client's fsync of a
    directory sends nothing; opening the directory to sync it would cost a GETATTR (and an
    ACCESS), measured on the QEMU guests. So on an NFS mount (``nfs``/``nfs4`` in
    /proc/self/mountinfo, or simfs, the EFS model, whose counts stand for an NFS client's)
    this returns at once.
    """
    if _on_nfs(path):
        return
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise storage_error_from(exc, "opening directory", path) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise storage_error_from(exc, "syncing directory", path) from exc
    finally:
        os.close(fd)


_NFS_TYPES = frozenset({"nfs", "nfs4", "fuse.efsray"})  # fuse.efsray: simfs, the EFS model


def on_nfs(path: Path) -> bool:
    """True if ``path`` is on an NFS mount or simfs (see ``_on_nfs``): for callers that size
    their writes for a network filesystem (efsray.store.hashing.LOCAL_WRITE_SIZE)."""
    return _on_nfs(path)


@functools.lru_cache(maxsize=1024)
def _on_nfs(path: Path) -> bool:
    """True if ``path`` is on an NFS mount (or simfs), from the longest mount point that
    contains it in /proc/self/mountinfo (a local read, no round trip; cached per path).
    False where it cannot tell: the caller then does what a local filesystem needs."""
    target = os.path.abspath(path)
    best, fstype = "", ""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            for line in mounts:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].replace("\\040", " ")
                inside = target == point or target.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, fstype = point, right.split()[0]
    except OSError:
        return False
    return fstype in _NFS_TYPES


# --- 2. publish by rename -----------------------------------------------------------------


def atomic_write(
    final: Path,
    payload: bytes | Writer,
    *,
    mode: int = FILE_MODE,
    durable: bool = True,
    sync_dir: bool = True,
) -> None:
    """Make ``final`` hold ``payload``, replacing any old content atomically.

    ``durable=False`` skips every fsync: for hints that may be lost in a power failure
    (HEAD). ``sync_dir=False`` leaves the directory fsync to the caller, who batches it:
    a commit writes several segment files and syncs their directory once before it links
    the manifest that names them. (On NFS, metadata operations are synchronous anyway.)
    """
    tmp = write_temp(final, payload, mode=mode, fsync=durable)
    try:
        os.rename(tmp, final)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise storage_error_from(exc, "publishing", final) from exc
    if durable and sync_dir:
        fsync_dir(final.parent)


def overwrite_hint(final: Path, payload: bytes) -> None:
    """Overwrite the hint ``final`` in place with ``payload`` (creating it by rename the
    first time), without fsync.

    For small files that readers treat as hints and check before trusting (HEAD names a
    version; a reader then opens that version's manifest). Give every payload the same length
    so that a new one covers the old one exactly. A reader racing the write may see a mix of
    old and new bytes: at worst a wrong hint, which costs it a few probes, never correctness.
    Errors are StorageErrors.
    """
    try:
        fd = os.open(final, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        atomic_write(final, payload, durable=False)
        return
    except OSError as exc:
        raise storage_error_from(exc, "opening", final) from exc
    try:
        try:
            os.pwrite(fd, payload, 0)
        finally:
            os.close(fd)  # NFS flushes the write here and reports its errors
    except OSError as exc:
        raise storage_error_from(exc, "writing", final) from exc


# --- 3. create if absent ------------------------------------------------------------------


def create_exclusive(
    final: Path,
    payload: bytes | Writer,
    *,
    mode: int = FILE_MODE,
    before_link: Callable[[], None] | None = None,
) -> None:
    """Create ``final`` with ``payload`` only if no file of that name exists.

    Raises ``FileExistsError`` if another writer (on any host) created it first. The file
    appears complete or not at all. ``before_link`` runs once the payload is durable and
    before ``final`` appears: the moment to wait for the files ``final`` will name
    (:meth:`BackgroundSyncs.wait`); if it raises, nothing is created.
    """
    tmp = write_temp(final, payload, mode=mode)
    try:
        if before_link is not None:
            before_link()
        try:
            os.link(tmp, final)
        except FileExistsError:
            if _link_count(tmp) != 2:  # 2: our link did happen, only its reply was lost
                raise
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise StorageError(
                    exc.errno,
                    f"the filesystem at {final.parent} does not support hard links "
                    f"({errno.errorcode.get(exc.errno)}); efsray needs link() to commit "
                    "safely (EFS, NFS and local filesystems have it)",
                    str(final),
                ) from exc
            raise storage_error_from(exc, "committing", final) from exc
    finally:
        _unlink_quietly(tmp)
    # The file is now visible to every host: the commit has happened. A failed directory
    # sync only weakens local power-loss durability, and reporting it as a failed commit
    # would make callers retry and commit twice.
    try:
        fsync_dir(final.parent)
    except StorageError as exc:
        log.warning("committed %s, but syncing its directory failed: %s", final, exc)


def link_all(finals: list[Path], payload: bytes, *, mode: int = FILE_MODE) -> list[Path]:
    """Create each of ``finals`` (one directory) if absent, all as hard links of one file
    holding ``payload``; the names this call created, durable on return.

    One temporary file and one ``link()`` per name (a LOOKUP and a LINK on NFS), instead of
    a temporary file, a link and a removal per name: a merge's redirects (one record naming
    all of its inputs, found under each input's name). Each name appears complete or not at
    all, as with :func:`create_exclusive`; a name that exists is left as it is (the caller
    must not rely on it). Errors are StorageErrors; names linked before one are kept.
    """
    if not finals:
        return []
    created: list[Path] = []
    tmp = write_temp(finals[0], payload, mode=mode)
    try:
        for final in finals:
            try:
                os.link(tmp, final)
            except FileExistsError:
                continue
            except OSError as exc:
                raise storage_error_from(exc, "linking", final) from exc
            created.append(final)
    finally:
        _unlink_quietly(tmp)
    fsync_dir(finals[0].parent)  # local filesystems: the links before what the caller removes
    return created


def _link_count(path: Path) -> int:
    try:
        return os.stat(path).st_nlink
    except OSError:
        return 0


# --- 4. reads that survive ESTALE -----------------------------------------------------------


def retry_estale(func: Callable[[], T], *, attempts: int = ESTALE_ATTEMPTS) -> T:
    """Call ``func``; when it fails with ESTALE, call it again (re-opening by name)."""
    for attempt in range(1, attempts + 1):
        try:
            return func()
        except OSError as exc:
            if exc.errno != errno.ESTALE or attempt == attempts:
                raise
            log.debug("ESTALE (attempt %d/%d), re-opening", attempt, attempts)
            time.sleep(0.001 * attempt)  # let the client drop its stale handle
    raise AssertionError("unreachable")


_FIRST_READ = 64 << 10  # read_bytes: files up to this size are read without fstat


def read_bytes(path: Path, *, drop_cache: bool = False, size: int | None = None) -> bytes:
    """Read a whole file, re-opening it on ESTALE. FileNotFoundError passes through.

    Plain open/read/close: the fewest calls, hence round trips, a whole-file read can make.
    No fstat for a file under 64 KiB (manifests, HEAD, redirects): it is read to its end,
    which the client knows from the attributes the open fetched. A stat can cost a GETATTR of
    its own: once another process of this client has read the file, the client marks its
    cached atime invalid (Linux NFS and FUSE), and the next stat asks the server; a crowd of
    readers on one node paid it on every file (issue 18.4).

    ``size``: the size the caller knows the file has (a segment's, from its manifest): read
    up to one byte more, so that a shorter or longer file shows (for the caller to report),
    with no fstat whatever the size. ``drop_cache``: this is the file's last read for a
    while (a merge's input, which only old versions name from now on); its pages leave the
    page cache, and the memory serves the merge's output instead of growing the cache.
    """

    def once() -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            # A known size: one byte more, so that a longer (damaged) file shows. Unknown:
            # read to the end, asking for the size (fstat) only past _FIRST_READ bytes.
            want = _FIRST_READ if size is None else size + 1
            parts = []
            got = 0
            while chunk := os.read(fd, want - got):
                parts.append(chunk)
                got += len(chunk)
                if got >= want:
                    if size is not None:
                        break
                    want = max(os.fstat(fd).st_size, got) + 1  # a big file: the rest at once
            if drop_cache:
                with contextlib.suppress(OSError):  # a hint
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            os.close(fd)

    return reading(path, once)


class PositionalReader:
    """A file opened for reads at offsets (a big file's footer and last blocks, where reading
    it whole would move megabytes for kilobytes). ``size`` comes from fstat: our files never
    change once published. Use it inside :func:`reading`, which retries ESTALE."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)  # OSError passes to reading()
        try:
            self.size = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise

    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer only at the end of the file)."""
        parts = []
        while length > 0:
            chunk = os.pread(self._fd, length, offset)
            if not chunk:
                break
            parts.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def __enter__(self) -> PositionalReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.close(self._fd)


def buffered_writer(fd: int) -> BinaryIO:
    """A buffered binary file over ``fd`` (left open on close), for encoders that write many
    small pieces: a raw descriptor returns short writes on NFS and FUSE."""
    # 1 MiB, the NFS wsize: an encoder's many small pieces leave in whole WRITEs
    return open(fd, "wb", buffering=1 << 20, closefd=False)


def reading(path: Path, func: Callable[[], T]) -> T:
    """Run ``func``, a read of ``path``: retried on ESTALE; FileNotFoundError passes
    through (absence means something to callers); any other OSError is a StorageError."""
    try:
        return retry_estale(func)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise storage_error_from(exc, "reading", path) from exc


# --- 5. the version log ---------------------------------------------------------------------

_SHARD = 1000  # manifests per directory: EFS directories stay small and fast to list
_SUM_START = b'{"checksum":"xxh3-64:'
_SUM_LEN = len(_SUM_START) + 16 + 2  # the prefix, 16 hex digits, '",'
_LEGACY_START = b'{"format":'
_HEAD_EVERY = 4  # HEAD is rewritten at version 1 and every 4th version (``_write_head``)
_REVALIDATE_PARENTS = 4  # a series' directory is <root>/market_data/ohlcv/<symbol>/<timeframe>
_FALLBACK_TRIES = 16  # opens per step of VersionLog._fallback before it tries the next step


def checksummed_json(manifest: dict[str, Any]) -> bytes:
    """``manifest`` as JSON, its checksum first (over every byte after the checksum field):
    manifests, and the redirects of merged-away segments (3.)."""
    body = json.dumps(manifest, separators=(",", ":")).encode()
    rest = body[1:]  # after the opening brace
    if rest == b"}":  # never: a committed manifest always has fields
        raise ValueError("empty manifest")
    return _SUM_START + xxhash.xxh3_64_hexdigest(rest).encode() + b'",' + rest


_with_checksum = checksummed_json  # the older name


def checksum_problem(raw: bytes) -> str | None:
    """What is wrong with the bytes of a :func:`checksummed_json` file, or None when they
    match their checksum."""
    if not raw.startswith(_SUM_START) or raw[_SUM_LEN - 2 : _SUM_LEN] != b'",':
        return "it does not begin with its checksum"
    expected = raw[len(_SUM_START) : _SUM_LEN - 2]
    got = xxhash.xxh3_64_hexdigest(memoryview(raw)[_SUM_LEN:]).encode()
    if got != expected:
        return (
            f"its checksum is xxh3-64:{expected.decode(errors='replace')}, its bytes hash to "
            f"xxh3-64:{got.decode()}"
        )
    return None


class ManifestCache:
    """Committed manifests already read, by (log directory, version). A committed version
    never changes, so an entry never goes stale; the cache only saves round trips."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[Path, int], dict[str, Any]] = OrderedDict()
        self._newest: dict[Path, int] = {}
        self._unopposed: dict[Path, int] = {}

    def newest(self, directory: Path) -> int:
        """The newest version of ``directory``'s log this cache has seen (0 if none)."""
        return self._newest.get(directory, 0)

    def committed(self, directory: Path, version: int, *, unopposed: bool) -> None:
        """Note that this process committed ``version``, and whether it met no other writer's
        version on the way (``VersionLog.commit``'s first link() succeeded)."""
        if unopposed:
            self._unopposed[directory] = version
        else:
            self._unopposed.pop(directory, None)

    def sole_writer(self, directory: Path) -> bool:
        """True while the newest version this cache knows is one this process committed at
        its first try: the likely next base of its next commit, without asking."""
        newest = self._newest.get(directory, 0)
        return newest > 0 and self._unopposed.get(directory) == newest

    def get(self, directory: Path, version: int) -> dict[str, Any] | None:
        manifest = self._entries.get((directory, version))
        if manifest is not None:
            self._entries.move_to_end((directory, version))
        return manifest

    def forget(self, directory: Path, version: int) -> None:
        """Drop a version retention removed (it is no longer committed)."""
        self._entries.pop((directory, version), None)

    def put(self, directory: Path, version: int, manifest: dict[str, Any]) -> None:
        self._entries[(directory, version)] = manifest
        if version > self._newest.get(directory, 0):
            self._newest[directory] = version
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)


def committed_time(manifest: dict[str, Any]) -> float | None:
    """When ``manifest`` was committed (its ``committed_at``), in epoch seconds; None if it
    does not say (retention then keeps it)."""
    value = manifest.get("committed_at")
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


class VersionLog:
    """A linear, gap-free history of JSON manifests, committed without locks.

    ``directory`` holds ``HEAD`` and ``versions/``. Versions start at 1. ``kind`` names what
    the log versions ("series AAPL/1m") for error messages. ``cache`` (shared by the logs of
    one store) remembers manifests already read.
    """

    def __init__(self, directory: Path, kind: str, cache: ManifestCache | None = None) -> None:
        self.directory = directory
        self.kind = kind
        self._head = directory / "HEAD"
        self._versions = directory / "versions"
        self._cache = cache

    def path(self, version: int) -> Path:
        return Path(f"{self._versions}/{version // _SHARD:06d}/v{version:012d}.json")

    # reading -------------------------------------------------------------------------------

    def has_history(self) -> bool:
        """True once anything was committed to this log (or HEAD says so)."""
        return kind_of(self._head) is not None or kind_of(self._versions) == "dir"

    exists = has_history  # the older name

    def read(self, version: int) -> dict[str, Any]:
        """The manifest of ``version``; VersionNotFoundError if it was never committed."""
        if version < 1:
            raise VersionNotFoundError(f"{self.kind} has no version {version}; versions start at 1")
        cached = self._cache.get(self.directory, version) if self._cache else None
        if cached is not None:
            return cached
        try:
            raw = read_bytes(self.path(version))
        except FileNotFoundError:
            raise VersionNotFoundError(
                f"{self.kind} has no version {version} (never committed, or removed by "
                "retention); `history` lists the versions that exist"
            ) from None
        return self._parse(version, raw)

    def forget(self, version: int) -> None:
        """Drop ``version`` from the cache: retention has removed it."""
        if self._cache is not None:
            self._cache.forget(self.directory, version)

    def remember(self, version: int, manifest: dict[str, Any]) -> None:
        if self._cache is not None:
            self._cache.put(self.directory, version, manifest)

    def _parse(self, version: int, raw: bytes) -> dict[str, Any]:
        self._check(version, raw)
        try:
            manifest = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptionError(
                f"manifest {self.path(version)} of {self.kind} is not valid JSON ({exc}); "
                "it was damaged after it was committed: restore it from a backup"
            ) from None
        if not isinstance(manifest, dict) or manifest.get("version") != version:
            raise CorruptionError(
                f"manifest {self.path(version)} of {self.kind} does not describe version "
                f"{version}; it was damaged or moved: restore it from a backup"
            )
        manifest.pop("checksum", None)  # verified above; callers see what build() returned
        self.remember(version, manifest)
        return manifest

    def _check(self, version: int, raw: bytes) -> None:
        """Verify a manifest's checksum (see the module docstring, 5.); CorruptionError if it
        does not match, or if the manifest is neither checksummed nor of the old format."""
        if raw.startswith(_LEGACY_START):  # no damage to a checksummed one makes this start
            return  # written before manifests had checksums: read unverified
        problem = checksum_problem(raw)
        if problem is not None:
            raise self._damaged(version, problem)

    def _damaged(self, version: int, what: str) -> CorruptionError:
        return CorruptionError(
            f"manifest {self.path(version)} of {self.kind} was damaged after it was committed "
            f"({what}); restore it from a backup, or read another version"
        )

    def verified(self, version: int) -> bool:
        """True if ``version``'s manifest carries a checksum (and it matches: a mismatch is a
        CorruptionError); False for a manifest written before checksums existed."""
        try:
            raw = read_bytes(self.path(version))
        except FileNotFoundError:
            raise VersionNotFoundError(f"{self.kind} has no version {version}") from None
        self._parse(version, raw)
        return not raw.startswith(_LEGACY_START)

    def _try_read(self, version: int) -> dict[str, Any] | None:
        cached = self._cache.get(self.directory, version) if self._cache else None
        if cached is not None:
            return cached
        try:
            return self._parse(version, read_bytes(self.path(version)))
        except FileNotFoundError:
            return None

    def head_hint(self) -> int:
        try:
            text = read_bytes(self._head).decode("ascii").strip()
            return int(text) if text.isdigit() else 0
        except (FileNotFoundError, UnicodeDecodeError):
            return 0

    def latest(self) -> tuple[int, dict[str, Any]] | None:
        """The newest committed version this client can open, and its manifest; None only
        for an empty log (nothing committed, or nothing this client has ever been able to see).

        Cost: when this process already knows a recent version, an open of its directory
        (``_revalidate``: one GETATTR on NFS) and one failed open (the probe for the next
        one, answered by the client's cache when the directory did not change). Otherwise:
        read HEAD, open the directory, one lookup per version committed since HEAD was
        written (up to 3: HEAD is rewritten every 4th version), one failed lookup and one
        read. Independent of the history's length.

        When HEAD names a version this client cannot open, see ``_fallback``: the answer is
        then the newest version it *can* open, possibly older than the newest committed one
        for as long as its lookup cache lags (close-to-open), never "nothing".
        """
        return self._latest(fresh=True)

    def _latest(self, *, fresh: bool) -> tuple[int, dict[str, Any]] | None:
        """:meth:`latest`. ``fresh``: revalidate the directory before trusting a failed open
        (``_revalidate``). Writers pass False: a stale view costs them one lost ``link()``
        race, after which ``commit`` revalidates, and a single writer saves the round trip."""
        known = self._cache.newest(self.directory) if self._cache else 0
        if known:
            if fresh:
                self._revalidate(known + 1)
            following = self._try_read(known + 1)
            if following is None:
                cached = self._try_read(known)
                if cached is not None:
                    return known, cached
            # Others have committed since: HEAD is the quicker way to catch up.
            head = self.head_hint()
        else:
            head = self.head_hint()
            if fresh:
                if not head:  # nothing committed, or this client's lookup of HEAD is stale
                    self._revalidate(0)
                    head = self.head_hint()
                self._revalidate(max(head, 1))
        hint = self._step(max(head, known))
        version, manifest = hint, self._try_read(hint) if hint else None
        if hint and manifest is None:
            version, manifest = self._fallback(hint)
        version, manifest = self._forward(version, manifest)
        if manifest is not None and version < hint - 1:
            # The walk stopped short of the hint: one more open of it (it failed before the
            # fallback; a fresh open may revalidate the directory and see it now).
            hinted = self._try_read(hint)
            if hinted is not None:
                version, manifest = self._forward(hint, hinted)
        if manifest is None:
            return None
        return version, manifest

    def _revalidate(self, version: int) -> None:
        """Make this client's next opens of names in ``version``'s shard directory (for
        version 0, the log's own directory, where HEAD is) answer from the server.

        An open that fails leaves a negative lookup in the client's cache (a negative dentry
        on the Linux NFS client), which it trusts for as long as it trusts the directory's
        cached attributes (acdirmin..acdirmax, 30-60 s on EFS): a version another host commits
        meanwhile stays invisible to a probe by name. Opening the directory itself forces
        close-to-open revalidation of its attributes (one GETATTR); if the directory changed,
        its change attribute did, and the client drops the negative lookups cached under it.
        Measured on the kernel clients: ``tests/guests``, docs/nfs-clients.md. A directory
        that does not exist (a new shard, a new log) is skipped for its parent. On a local
        filesystem this costs one open; on FUSE (simfs) an OPENDIR, without the effect: FUSE
        expires negative entries by time only. Best effort: an error here is the next open's
        to report.
        """
        for candidate in self._revalidation_candidates(version):
            try:
                fd = os.open(candidate, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                log.debug("could not open %s to revalidate it: %s", candidate, exc)
                return
            os.close(fd)
            return

    def _revalidation_candidates(self, version: int) -> Iterator[Path]:
        """The directories ``_revalidate`` tries, nearest first (made as needed: the first
        one almost always exists, and building paths costs more than the open on a local
        disk)."""
        if version:
            yield self.path(version).parent
            yield self._versions
        # Then the log's directory and its parents: a client that looked for the log before
        # it existed cached the absence of the first missing one.
        yield self.directory
        yield from list(self.directory.parents)[:_REVALIDATE_PARENTS]

    def _step(self, version: int) -> int:
        """The last of ``version``, ``version + 1``, ... before the first name that does not
        exist, found by lookups (one LOOKUP each on NFS, no manifest read): HEAD may lag the
        newest version by up to _HEAD_EVERY - 1. ``version`` itself is not looked up."""
        while version:
            if (version + 1) % _SHARD == 0:  # into a shard this client may not know
                self._revalidate(version + 1)
            cached = self._cache.get(self.directory, version + 1) if self._cache else None
            if cached is None and kind_of(self.path(version + 1)) is None:
                return version
            version += 1
        return version

    def _forward(
        self, version: int, manifest: dict[str, Any] | None
    ) -> tuple[int, dict[str, Any] | None]:
        """From ``version`` (opened, or 0 and None), the newest one reachable by stepping to
        the next ones, or ``version`` and ``manifest`` as they were if the next does not exist.

        Steps look names up (one LOOKUP each on NFS) and only the last manifest is read: HEAD
        may lag the newest version by up to _HEAD_EVERY - 1."""
        start = version
        if not version:  # nothing opened yet: is there a version 1?
            if kind_of(self.path(1)) is None:
                return version, manifest
            version = 1
        version = self._step(version)
        if version == start:
            return version, manifest
        newest = self._try_read(version)
        if newest is not None:
            return version, newest
        # Gone between the lookup and the open (another host's retention): open forward.
        version = start
        while (newer := self._try_read(version + 1)) is not None:
            version, manifest = version + 1, newer
        return version, manifest

    def _fallback(self, hint: int) -> tuple[int, dict[str, Any] | None]:
        """The newest version that opens when ``hint`` (HEAD's version, or one this process
        read) does not; (hint, None) if none does.

        Either retention removed the hint (never the latest: newer versions exist after it),
        or this client's caches hide it: an earlier probe of this name left a negative
        lookup (FUSE's negative entry cache; an NFS client's negative dentry, trusted until
        the directory's attributes expire, acdirmin..acdirmax). The versions before it are
        then visible. In order: the listed versions, newest first (retention removes the
        oldest, so the first few tries find a survivor); then forward from the hint (the
        listing lags too); then back from it, one version at a time.
        """
        for listed in sorted(set(self.listed_versions()), reverse=True)[:_FALLBACK_TRIES]:
            manifest = self._try_read(listed)
            if manifest is not None:
                return listed, manifest
        version, manifest = self._gallop(hint)
        if manifest is not None:
            return version, manifest
        for older in range(hint - 1, max(0, hint - 1 - _FALLBACK_TRIES), -1):
            manifest = self._try_read(older)
            if manifest is not None:
                return older, manifest
        return hint, None

    def _gallop(self, hint: int) -> tuple[int, dict[str, Any] | None]:
        step = 1
        while step < 1 << 40:
            found = self._try_read(hint + step)
            if found is not None:
                return hint + step, found
            step *= 2
        return hint, None

    def listed_versions(self) -> Iterator[int]:
        """Versions found by listing, ascending. May lag other hosts' newest commits."""
        shards = sorted(p for p in list_dir(self._versions) if p.isdigit())
        for shard in shards:
            for name in sorted(list_dir(self._versions / shard)):
                if name.startswith("v") and name.endswith(".json") and name[1:-5].isdigit():
                    yield int(name[1:-5])

    def known_versions(self) -> tuple[int, list[int]]:
        """(latest, every version that may exist up to it, ascending); (0, []) when nothing
        is committed. The listed versions and, since a listing can lag other hosts' newest
        commits, every number after the newest listed one up to the latest found by probing.
        """
        found = self.latest()
        if found is None:
            return 0, []
        latest = found[0]
        listed = sorted(set(self.listed_versions()))
        top = listed[-1] if listed else 0
        return latest, sorted({v for v in listed if v <= latest} | set(range(top + 1, latest + 1)))

    def read_present(self, versions: list[int]) -> dict[int, dict[str, Any]]:
        """The manifests of ``versions`` that exist (retention may have removed some), read
        in parallel: each read is a round trip on EFS."""

        def one(v: int) -> tuple[int, dict[str, Any] | None]:
            try:
                return v, self.read(v)
            except VersionNotFoundError:
                return v, None

        if len(versions) <= 2:
            pairs = [one(v) for v in versions]
        else:
            pairs = list(io_pool().map(one, versions))
        return {v: manifest for v, manifest in pairs if manifest is not None}

    # committing ----------------------------------------------------------------------------

    def commit(
        self,
        build: Callable[[int, dict[str, Any] | None], dict[str, Any] | None],
        *,
        before_publish: Callable[[], None] | None = None,
        max_attempts: int = 1000,
    ) -> tuple[int, dict[str, Any]] | None:
        """Commit the manifest ``build(base_version, base_manifest)`` as the next version.

        ``build`` is called again whenever another writer commits first, with that writer's
        version as the new base; it must be a pure function of its arguments (plus files it
        wrote earlier, which it may reuse). It returns None to commit nothing. Returns the
        committed (version, manifest), or None if ``build`` declined. ``before_publish``
        runs before each attempt to publish a manifest, once it is durable (see
        ``create_exclusive``): it makes the files the manifest names durable.
        """
        found = self._unopposed_base()
        if found is None:
            found = self._latest(fresh=False)
        head = self.head_hint() if found is None else 0  # read once: each read is a round trip
        if found is None and head > 0:  # a stale lookup cache, or worse
            found = self._latest(fresh=True)
        if found is None and head > 0:
            # HEAD proves versions were committed, yet none is visible: starting again at
            # version 1 would fork the history. Refuse; the caches will catch up.
            raise StorageError(
                errno.ENOENT,
                f"{self.kind}: HEAD names version {head} but no manifest is "
                f"visible under {self._versions}; the directory cache may lag another host. "
                "Retry in a minute; if it persists, the versions were deleted by hand.",
                str(self._versions),
            )
        base_version, base = found if found else (0, None)
        losses = 0
        for _ in range(max_attempts):
            manifest = build(base_version, base)
            if manifest is None:
                return None
            version = base_version + 1
            manifest = {
                **manifest,
                "version": version,
                "parent": base_version or None,
                "committed_at": dt.datetime.now(dt.UTC).isoformat(),
                "writer": {"host": _HOST, "pid": os.getpid()},
            }
            target = self.path(version)
            ensure_dir(target.parent)
            try:
                create_exclusive(
                    target, checksummed_json(manifest), mode=IMMUTABLE_MODE,
                    before_link=before_publish,
                )  # fmt: skip
            except FileExistsError:
                losses += 1
                self._revalidate(version)  # a failed probe may have cached its absence
                newer = self._try_read(version)
                if newer is None:
                    # Retention removed it once a newer version existed (a cleanup with no
                    # grace), or another client committed it and our lookup cache hides it.
                    found = self._latest(fresh=True)
                    if found is not None and found[0] > version:
                        base_version, base = found
                        continue
                    raise StorageError(
                        errno.EEXIST,
                        f"{self.kind}: version {version} was committed by another client but "
                        f"this client cannot open {target} yet: its lookup cache lags (up to "
                        "acdirmax, a minute on EFS), or a cleanup with too short a grace "
                        "removed it. Nothing was committed; retry the write later. If it "
                        "persists, check `efsray health`.",
                        str(target),
                    ) from None
                # Rebuild on the newest version, not just on the one that beat us: a writer
                # that stepped one version at a time would lose every race to a faster one.
                base_version, base = version, newer
                while (following := self._try_read(base_version + 1)) is not None:
                    base_version, base = base_version + 1, following
                if losses > 3:  # many writers at once: spread the next attempts out
                    time.sleep(random.uniform(0, min(0.05, 0.001 * losses)))  # noqa: S311
                continue
            self._write_head(version)
            self.remember(version, manifest)
            if self._cache is not None:
                self._cache.committed(self.directory, version, unopposed=losses == 0)
            return version, manifest
        raise CommitConflictError(
            f"gave up committing to {self.kind} after {max_attempts} attempts: other writers "
            "kept committing first. Retry later, or write from fewer processes at once."
        )

    def _unopposed_base(self) -> tuple[int, dict[str, Any]] | None:
        """The version this process committed last, if it won that commit at its first try
        and has seen no newer one since (``ManifestCache.sole_writer``): the base of the next
        commit without the probe for the version after it. A single writer (one ingest
        process per series, one trainer per model) saves a round trip per commit; if another
        writer came meanwhile, ``link()`` answers EEXIST and the commit rebuilds on the newer
        version, as after any lost race. None otherwise (the caller asks the filesystem)."""
        if self._cache is None or not self._cache.sole_writer(self.directory):
            return None
        version = self._cache.newest(self.directory)
        manifest = self._cache.get(self.directory, version)
        return None if manifest is None else (version, manifest)

    def _write_head(self, version: int) -> None:
        # Only a hint: losing it (crash, ENOSPC) costs readers a few extra probes, not data.
        # Written at version 1 and every _HEAD_EVERY-th version after: three round trips
        # (open, WRITE, CLOSE) saved on the other commits, for at most _HEAD_EVERY - 1 more
        # lookups by a reader that starts from HEAD (``_forward``). Retention may remove
        # HEAD's own version (never the latest): a reader that cannot open it falls back to
        # the listed versions (``_fallback``), a few round trips, never a wrong answer.
        # Fixed width, so that each write covers the previous one exactly.
        if version != 1 and version % _HEAD_EVERY:
            return
        with contextlib.suppress(StorageError):
            overwrite_hint(self._head, f"{version:020d}\n".encode())


# --- 6. removal, and the other calls the store makes ----------------------------------------


def lstat_or_none(path: str | os.PathLike[str]) -> os.stat_result | None:
    """``os.lstat(path)``, None when it does not exist; any other error is a StorageError
    (cleanup must not take an unreadable file for an absent one)."""
    return _stat_or_none(path, os.lstat)


def stat_or_none(path: str | os.PathLike[str]) -> os.stat_result | None:
    """``os.stat(path)`` (a symbolic link followed), like :func:`lstat_or_none`."""
    return _stat_or_none(path, os.stat)


def _stat_or_none(
    path: str | os.PathLike[str], call: Callable[[str | os.PathLike[str]], os.stat_result]
) -> os.stat_result | None:
    try:
        return retry_estale(lambda: call(path))
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise storage_error_from(exc, "checking", path) from exc


@contextlib.contextmanager
def opened(path: str | os.PathLike[str]) -> Iterator[int]:
    """A descriptor of ``path`` open for reading, closed on exit. OSError (FileNotFoundError
    included) passes through: run it inside :func:`reading` to retry ESTALE."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def remove_file(path: str | os.PathLike[str]) -> bool:
    """Remove one file: True if this call removed it, False if it was already gone; any
    other error is a StorageError."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise storage_error_from(exc, "removing", path) from exc
    return True


def tree_stats(path: Path) -> tuple[float | None, int, int]:
    """(newest mtime of the directory and everything in it, file count, bytes); None for
    the time when ``path`` does not exist."""
    files = size = 0
    top = lstat_or_none(path)
    if top is None:
        return None, 0, 0
    newest = top.st_mtime
    for root, dirs, names in walk(path):
        for name in dirs + names:
            st = lstat_or_none(os.path.join(root, name))
            if st is None:
                continue
            newest = max(newest, st.st_mtime)
            if name in names:
                files += 1
                size += st.st_size
    return newest, files, size


def remove_tree(path: Path, files: list[str] | None = None) -> None:
    """Remove a directory tree: the listed files (relative paths) first, or all, then any
    leftovers (a crashed writer's temporary files) and the directories, bottom-up."""
    if files is None:
        files = [
            os.path.relpath(os.path.join(root, name), path)
            for root, _, names in walk(path)
            for name in names
        ]
    for rel in files:
        remove_file(path / rel)
    for root, dirs, names in walk(path, topdown=False):
        for name in names:
            remove_file(os.path.join(root, name))
        for name in dirs:
            _rmdir(Path(root) / name)
    _rmdir(path)


def _rmdir(path: Path) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise storage_error_from(exc, "removing directory", path) from exc
        log.warning("directory %s is not empty after cleanup; leaving it", path)


def discard_tree(path: Path) -> None:
    """Remove an unpublished directory (a failed copy's staging area), ignoring errors:
    what is left is a temporary name that cleanup removes."""
    shutil.rmtree(path, ignore_errors=True)


def publish_dir(staging: Path, final: Path) -> None:
    """Rename the complete directory ``staging`` to ``final`` (which must not exist or be
    empty), so that ``final`` appears whole or not at all, and make the rename durable."""
    try:
        os.rename(staging, final)
    except OSError as exc:
        raise storage_error_from(exc, "publishing", final) from exc
    fsync_dir(final.parent)


def remove_empty_dir(path: Path) -> bool:
    """Remove ``path`` if it is an empty directory; False (and nothing done) otherwise."""
    try:
        os.rmdir(path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            log.warning("could not remove empty directory %s: %s", path, exc)
        return False
    return True


def read_range(path: Path, offset: int, length: int) -> bytes:
    """``length`` bytes of ``path`` from ``offset`` (one open, one pread, one close),
    re-opening on ESTALE; FileNotFoundError passes through, other errors are StorageErrors.
    Fewer bytes come back only if the file is shorter: the caller's checksum says so."""

    def once() -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            parts: list[bytes] = []
            got = 0
            while got < length:
                chunk = os.pread(fd, length - got, offset + got)
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        finally:
            os.close(fd)

    return reading(path, once)
