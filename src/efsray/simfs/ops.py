"""The FUSE operations: a passthrough to a backing directory that behaves like NFS on EFS.

Every handler first calls :meth:`OpBoard.enter` (count, hang, fault, latency), then does the
operation on the backing directory. What differs from a plain passthrough, and why:

- ``rename`` with any ``renameat2`` flag (``RENAME_NOREPLACE``, ``RENAME_EXCHANGE``,
  ``RENAME_WHITEOUT``) fails with ``EINVAL`` before any round trip, as the Linux NFS client
  does. Plain ``rename`` replaces the target atomically.
- ``O_APPEND`` is not passed to the backing file. The kernel computes each append's offset
  from its own cached file size, and the write lands at that offset, which is how an NFS
  client implements O_APPEND. Within one mount appends are serialised by the kernel; two
  mounts of the same backing directory are two clients whose appends can overwrite each
  other, as on EFS. Opens with O_APPEND are counted (``open_append``).
- Locks (``fcntl``/``flock``) are not implemented here, so the kernel keeps them local to the
  mount: advisory, and invisible to another mount of the same backing directory.
- Extended attributes and ``fallocate`` are not implemented (EOPNOTSUPP), as on NFSv4.1.
- Files removed while open are renamed to ``.fuse_hidden*`` until closed (libfuse's
  equivalent of the NFS client's ``.nfs*`` silly rename) unless ``hard_remove`` is set.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from collections.abc import Callable
from typing import Any

import mfusepy

from efsray.simfs.board import OpBoard

__all__ = ["PassthroughOps", "SimFUSE", "caller_pid"]

_STAT_FIELDS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2


def resolve_utimens(
    times: tuple[int, int], current: Callable[[], tuple[int, int]]
) -> tuple[int, int]:
    """(atime, mtime) in ns with UTIME_NOW made the current time and UTIME_OMIT the file's
    own value (``current()``, called at most once and only when needed)."""
    now: int | None = None
    kept: tuple[int, int] | None = None
    resolved = []
    for index, value in enumerate(times):
        if value == _UTIME_NOW:
            now = now if now is not None else time.time_ns()
            resolved.append(now)
        elif value == _UTIME_OMIT:
            kept = kept if kept is not None else current()
            resolved.append(kept[index])
        else:
            resolved.append(int(value))
    return resolved[0], resolved[1]


def caller_pid() -> int:
    """The pid of the process whose request this FUSE worker thread is handling."""
    return int(mfusepy.fuse_get_context()[2])


class SimFUSE(mfusepy.FUSE):
    """mfusepy's FUSE with the ``renameat2`` flags and fchmod's file handle passed on
    (mfusepy drops both)."""

    def chmod_fuse_3(self, path: bytes | None, mode: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        decoded = None if path is None else path.decode(self.encoding, self.errors)
        return self.operations.chmod(decoded, mode, fh)

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        return self.operations.rename(
            old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
        )


class PassthroughOps(mfusepy.Operations):
    """Passthrough operations on ``backing``, instrumented by ``board``."""

    use_ns = True

    def __init__(
        self,
        backing: str,
        board: OpBoard,
        *,
        attr_timeout: float = 0.0,
        hard_remove: bool = False,
        on_init: Any = None,
    ) -> None:
        self.backing = os.path.realpath(backing)
        self.board = board
        self.attr_timeout = attr_timeout
        self.hard_remove = hard_remove
        self._on_init = on_init
        self._as_root = os.geteuid() == 0
        self._fuse_handle: int | None = None

    # --- helpers -------------------------------------------------------------------------
    def _real(self, path: str) -> str:
        # libfuse hands us normalised absolute paths ("/a/b"); the kernel resolved every
        # component, so ".." cannot appear. Refuse anything else rather than trust it.
        if not path.startswith("/") or "/../" in f"{path}/":
            raise mfusepy.FuseOSError(errno.EINVAL)
        return self.backing + path if path != "/" else self.backing

    def _own(self, real: str | None = None, fd: int | None = None) -> None:
        """Give a new file the caller's uid/gid, as a local or NFS filesystem would."""
        if not self._as_root:
            return
        uid, gid, _pid = mfusepy.fuse_get_context()
        if uid == 0 and gid == 0:
            return
        if fd is not None:
            os.fchown(fd, uid, gid)
        elif real is not None:
            os.chown(real, uid, gid, follow_symlinks=False)

    @staticmethod
    def _stat_dict(st: os.stat_result) -> dict[str, Any]:
        attrs: dict[str, Any] = {name: getattr(st, name) for name in _STAT_FIELDS}
        attrs["st_atime"] = st.st_atime_ns
        attrs["st_mtime"] = st.st_mtime_ns
        attrs["st_ctime"] = st.st_ctime_ns
        return attrs

    # --- lifecycle -----------------------------------------------------------------------
    def init_with_config(self, conn_info: Any, config_3: Any) -> None:
        if config_3 is not None:
            # Every lookup and attribute read goes to the "server": the worst case of an NFS
            # client's attribute cache, and deterministic round-trip counts.
            config_3.attr_timeout = self.attr_timeout
            config_3.entry_timeout = self.attr_timeout
            config_3.negative_timeout = self.attr_timeout
            config_3.hard_remove = int(self.hard_remove)
        if conn_info is not None:
            conn_info.max_readahead = 1 << 20  # rsize=1048576
        # The libfuse session, so that exit_session() can end it from outside a callback.
        self._fuse_handle = mfusepy._libfuse.fuse_get_context().contents.fuse
        if self._on_init is not None:
            self._on_init()

    def exit_session(self) -> bool:
        """Ask libfuse's loop to end (``fuse_exit``); False when the session is not up yet.

        The loop notices at its next wake-up: a request, or a signal to the thread that runs
        it (see :func:`efsray.simfs.server.serve`).
        """
        if self._fuse_handle is None:
            return False
        mfusepy._libfuse.fuse_exit(ctypes.c_void_p(self._fuse_handle))
        return True

    # --- metadata ------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self.board.enter("getattr", path)
        st = os.fstat(fh) if fh is not None else os.lstat(self._real(path))
        return self._stat_dict(st)

    def access(self, path: str, amode: int) -> int:
        self.board.enter("access", path)
        if not os.access(self._real(path), amode, follow_symlinks=False):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def readlink(self, path: str) -> str:
        self.board.enter("readlink", path)
        return os.readlink(self._real(path))

    def statfs(self, path: str) -> dict[str, int]:
        self.board.enter("statfs", path)
        sv = os.statvfs(self._real(path))
        return {
            key: getattr(sv, key)
            for key in (
                "f_bsize",
                "f_frsize",
                "f_blocks",
                "f_bfree",
                "f_bavail",
                "f_files",
                "f_ffree",
                "f_favail",
                "f_namemax",
            )
        }

    def chmod(self, path: str, mode: int, fh: int | None = None) -> int:
        self.board.enter("chmod", path)
        if fh is not None:
            os.fchmod(fh, mode)
        else:
            os.chmod(self._real(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        self.board.enter("chown", path)
        os.chown(self._real(path), uid, gid, follow_symlinks=False)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self.board.enter("truncate", path)
        if fh is not None:
            os.ftruncate(fh, length)
        else:
            os.truncate(self._real(path), length)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self.board.enter("utimens", path)
        real = self._real(path)
        if times is None:
            os.utime(real, follow_symlinks=False)
            return 0

        def current() -> tuple[int, int]:
            st = os.lstat(real)
            return st.st_atime_ns, st.st_mtime_ns

        os.utime(real, ns=resolve_utimens(times, current), follow_symlinks=False)
        return 0

    # --- namespace -----------------------------------------------------------------------
    def mknod(self, path: str, mode: int, dev: int) -> int:
        self.board.enter("mknod", path)
        real = self._real(path)
        os.mknod(real, mode, dev)
        self._own(real)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        self.board.enter("mkdir", path)
        real = self._real(path)
        os.mkdir(real, mode)
        self._own(real)
        return 0

    def unlink(self, path: str) -> int:
        self.board.enter("unlink", path)
        os.unlink(self._real(path))
        return 0

    def rmdir(self, path: str) -> int:
        self.board.enter("rmdir", path)
        os.rmdir(self._real(path))
        return 0

    def symlink(self, target: str, source: str) -> int:
        # mfusepy: creates ``target`` (a path in the mount) pointing at ``source`` (any text)
        self.board.enter("symlink", target)
        real = self._real(target)
        os.symlink(source, real)
        self._own(real)
        return 0

    def link(self, target: str, source: str) -> int:
        # mfusepy: creates ``target`` as a new name for the existing ``source``
        self.board.enter("link", source, target)
        real = self._real(target)
        os.link(self._real(source), real, follow_symlinks=False)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags:
            # The Linux NFS client refuses every renameat2 flag locally, with no round trip.
            self.board.note_rejected_rename()
            raise mfusepy.FuseOSError(errno.EINVAL)
        self.board.enter("rename", old, new)
        os.rename(self._real(old), self._real(new))
        return 0

    # --- files ---------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        self.board.enter("open", path)
        if flags & os.O_APPEND:
            self.board.note_append_open()
        return os.open(self._real(path), flags & ~(os.O_APPEND | os.O_CREAT))

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        self.board.enter("create", path)
        if flags & os.O_APPEND:
            self.board.note_append_open()
        fd = os.open(self._real(path), (flags & ~os.O_APPEND) | os.O_CREAT, mode)
        try:
            self._own(fd=fd)
        except OSError:
            os.close(fd)
            raise
        return fd

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self.board.enter("read", path)
        data = os.pread(fh, size, offset)
        self.board.add_bytes(read=len(data))
        return data

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self.board.enter("write", path)
        written = os.pwrite(fh, data, offset)
        self.board.add_bytes(written=written)
        return written

    def flush(self, path: str, fh: int) -> int:
        # close() waits for this: on NFS it flushes dirty pages and reports write errors.
        self.board.enter("flush", path)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self.board.enter("fsync", path)
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        return 0

    def release(self, path: str, fh: int) -> int:
        # Asynchronous in the kernel (nobody waits for it) and its result is ignored; count
        # it but never hang or fail it, or the descriptor would leak.
        self.board.count_only("release", path)
        os.close(fh)
        return 0

    # --- directories ---------------------------------------------------------------------
    def opendir(self, path: str) -> int:
        self.board.enter("opendir", path)
        if not os.path.isdir(self._real(path)):
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return 0

    def readdir(self, path: str, fh: int) -> list[str]:
        self.board.enter("readdir", path)
        names = os.listdir(self._real(path))
        self.board.readdir_delay(len(names))
        return [".", "..", *names]

    def releasedir(self, path: str, fh: int) -> int:
        self.board.count_only("releasedir", path)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.board.enter("fsyncdir", path)
        fd = os.open(self._real(path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return 0
