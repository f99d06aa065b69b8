"""FUSE operations over a real NFS client (libnfs): the simulator's real-NFS mode.

:class:`NfsOps` has the handlers of :class:`~efsray.simfs.ops.PassthroughOps` (counting,
hangs, faults and latency included) but sends every operation over NFS to a server (in the
tests: nfs-ganesha on 127.0.0.1) instead of to a local directory. Applications use a normal
mount point, and their ``link``, ``rename``, ``fsync`` and reads travel as NFSv4 COMPOUNDs,
with the server's own answers (NFS4ERR_EXIST, ...). The FUSE file handle is libnfs's handle.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import mfusepy

from efsray.simfs.board import OpBoard
from efsray.simfs.libnfs import NfsClient
from efsray.simfs.ops import PassthroughOps, resolve_utimens

__all__ = ["NfsOps"]


class NfsOps(PassthroughOps):
    """Passthrough to an NFS export through ``client``."""

    def __init__(self, client: NfsClient, board: OpBoard, **kwargs: Any) -> None:
        super().__init__("/", board, **kwargs)
        self.nfs = client
        # libnfs 4.0 mishandles two opens of one file by one NFSv4 open-owner (the second
        # OPEN bumps the shared stateid; I/O through the first then fails with
        # NFS4ERR_OLD_STATEID/BAD_SEQID). So each open file gets a client (a connection and
        # an open-owner) of its own, taken from a pool and returned at release.
        self._idle: list[NfsClient] = []
        self._by_fh: dict[int, NfsClient] = {}
        self._pool_lock = threading.Lock()
        # Open libnfs handles by path: the kernel sends fchmod() as a path SETATTR, and a
        # path SETATTR of a file libnfs 4.0 holds open breaks its NFSv4 state (see libnfs).
        self._open: dict[str, list[int]] = {}
        self._open_lock = threading.Lock()

    def _opened(self, path: str, fh: int) -> int:
        with self._open_lock:
            self._open.setdefault(path, []).append(fh)
        return fh

    def _closed(self, path: str, fh: int) -> None:
        with self._open_lock:
            for key in (path, *self._open):
                handles = self._open.get(key)
                if handles and fh in handles:
                    handles.remove(fh)
                    if not handles:
                        del self._open[key]
                    return

    def _an_open_handle(self, path: str) -> int | None:
        with self._open_lock:
            handles = self._open.get(path)
            return handles[-1] if handles else None

    def _moved(self, old: str, new: str) -> None:
        with self._open_lock:
            if old in self._open:
                self._open.setdefault(new, []).extend(self._open.pop(old))

    def _own_nfs(self, path: str) -> None:
        if not self._as_root:
            return
        uid, gid, _pid = mfusepy.fuse_get_context()
        if uid or gid:
            self.nfs.chown(path, uid, gid)

    def destroy(self, path: str) -> None:
        with self._pool_lock:
            clients = [*self._idle, *self._by_fh.values()]
            self._idle.clear()
            self._by_fh.clear()
        for client in clients:
            client.close()
        self.nfs.close()

    def _file_client(self) -> NfsClient:
        with self._pool_lock:
            if self._idle:
                return self._idle.pop()
        return NfsClient(self.nfs.url, setattr_client=False)

    def _of(self, fh: int) -> NfsClient:
        with self._pool_lock:
            return self._by_fh.get(fh, self.nfs)

    def _bind(self, fh: int, client: NfsClient) -> int:
        with self._pool_lock:
            self._by_fh[fh] = client
        return fh

    def _unbind(self, fh: int) -> NfsClient:
        with self._pool_lock:
            return self._by_fh.pop(fh, self.nfs)

    def _open_on_a_client(self, call: Callable[[NfsClient], int]) -> tuple[int, NfsClient]:
        """``call`` (an open or create) on a pooled client. libnfs 4.0 can break a client's
        NFSv4 open state when opens overlap (BAD_SEQID/OLD_STATEID, reported as ERANGE): such a
        client is closed rather than pooled, where every later open on it would fail the same
        way, and the call is made once more on a new client."""
        for attempt in (1, 2):
            client = self._file_client()
            try:
                return call(client), client
            except OSError as exc:
                if not self._drop_if_broken(client, exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _drop_if_broken(self, client: NfsClient, exc: OSError) -> bool:
        """Close ``client`` if ``exc`` says libnfs broke its NFSv4 state, else pool it again;
        whether it was dropped."""
        if exc.errno == errno.ERANGE and client is not self.nfs:
            client.close()
            return True
        self._give_back(client)
        return False

    def _give_back(self, client: NfsClient) -> None:
        if client is self.nfs:
            return
        with self._pool_lock:
            self._idle.append(client)

    # --- metadata ------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self.board.enter("getattr", path)
        return self._of(fh).fstat(fh) if fh is not None else self.nfs.stat(path)

    def access(self, path: str, amode: int) -> int:
        self.board.enter("access", path)
        self.nfs.stat(path)
        return 0

    def readlink(self, path: str) -> str:
        self.board.enter("readlink", path)
        return self.nfs.readlink(path)

    def statfs(self, path: str) -> dict[str, int]:
        self.board.enter("statfs", path)
        return self.nfs.statvfs(path)

    def chmod(self, path: str, mode: int, fh: int | None = None) -> int:
        self.board.enter("chmod", path)
        fh = fh if fh is not None else self._an_open_handle(path)
        if fh is not None:
            self._of(fh).fchmod(fh, stat.S_IMODE(mode))  # a path SETATTR breaks libnfs 4.0's state
        else:
            self.nfs.chmod(path, stat.S_IMODE(mode))
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        self.board.enter("chown", path)
        if uid == -1 or gid == -1:  # "leave as is": NFS needs both, so read the current one
            current = self.nfs.stat(path)
            uid = current["st_uid"] if uid == -1 else uid
            gid = current["st_gid"] if gid == -1 else gid
        self.nfs.chown(path, uid, gid)
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        self.board.enter("truncate", path)
        if fh is not None:
            self._of(fh).ftruncate(fh, length)
        else:
            self.nfs.truncate(path, length)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self.board.enter("utimens", path)
        if times is None:
            now = time.time_ns()
            self.nfs.utimes(path, now, now)
            return 0

        def current() -> tuple[int, int]:
            st = self.nfs.stat(path)
            return st["st_atime"], st["st_mtime"]

        self.nfs.utimes(path, *resolve_utimens(times, current))
        return 0

    # --- namespace -----------------------------------------------------------------------
    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise mfusepy.FuseOSError(errno.EPERM)  # special files are not needed on EFS

    def mkdir(self, path: str, mode: int) -> int:
        self.board.enter("mkdir", path)
        self.nfs.mkdir(path, mode)
        self._own_nfs(path)
        return 0

    def unlink(self, path: str) -> int:
        self.board.enter("unlink", path)
        self.nfs.unlink(path)
        return 0

    def rmdir(self, path: str) -> int:
        self.board.enter("rmdir", path)
        self.nfs.rmdir(path)
        return 0

    def symlink(self, target: str, source: str) -> int:
        self.board.enter("symlink", target)
        self.nfs.symlink(source, target)
        return 0

    def link(self, target: str, source: str) -> int:
        self.board.enter("link", source, target)
        self.nfs.link(source, target)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags:
            self.board.note_rejected_rename()
            raise mfusepy.FuseOSError(errno.EINVAL)
        self.board.enter("rename", old, new)
        self.nfs.rename(old, new)
        self._moved(old, new)
        return 0

    # --- files ---------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        self.board.enter("open", path)
        if flags & os.O_APPEND:
            self.board.note_append_open()
        fh, client = self._open_on_a_client(
            lambda client: client.open(path, flags & ~(os.O_APPEND | os.O_CREAT))
        )
        return self._opened(path, self._bind(fh, client))

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        self.board.enter("create", path)
        if flags & os.O_APPEND:
            self.board.note_append_open()
        fh, client = self._open_on_a_client(
            lambda client: client.create(
                path, (flags & ~os.O_APPEND) | os.O_CREAT, stat.S_IMODE(mode)
            )
        )
        self._bind(fh, client)
        try:
            self._own_nfs(path)
        except OSError:
            self._unbind(fh).close_file(fh)
            self._give_back(client)
            raise
        return self._opened(path, fh)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self.board.enter("read", path)
        data = self._of(fh).pread(fh, size, offset)
        self.board.add_bytes(read=len(data))
        return data

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        self.board.enter("write", path)
        written = self._of(fh).pwrite(fh, data, offset)
        self.board.add_bytes(written=written)
        return written

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        self.board.enter("fsync", path)
        self._of(fh).fsync(fh)
        return 0

    def release(self, path: str, fh: int) -> int:
        self.board.count_only("release", path)
        self._closed(path, fh)
        client = self._unbind(fh)
        try:
            client.close_file(fh)
        except OSError as exc:
            self._drop_if_broken(client, exc)
            raise
        self._give_back(client)
        return 0

    # --- directories ---------------------------------------------------------------------
    def opendir(self, path: str) -> int:
        self.board.enter("opendir", path)
        if not stat.S_ISDIR(self.nfs.stat(path)["st_mode"]):
            raise mfusepy.FuseOSError(errno.ENOTDIR)
        return 0

    def readdir(self, path: str, fh: int) -> list[str]:
        self.board.enter("readdir", path)
        names = self.nfs.listdir(path)
        self.board.readdir_delay(len(names))
        return [".", "..", *names]

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        self.board.enter("fsyncdir", path)  # NFS metadata operations are synchronous
        return 0
