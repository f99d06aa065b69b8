"""A small synchronous NFS client over libnfs (ctypes), for the real-NFS mode.

:class:`NfsClient` speaks NFS to a server in user space (no kernel NFS client, no root
needed on the client side): ``NfsClient("nfs://127.0.0.1/export?version=4&nfsport=2049")``.
Its methods mirror :mod:`os` (``stat``, ``open``, ``pread``, ``pwrite``, ``rename``,
``link``, ...) and raise ``OSError`` with the errno the server returned. One libnfs context
is not thread-safe, so every call holds the client's lock.

Debian's libnfs 4.0 encodes every NFSv4 COMPOUND into a fixed 4 KiB buffer: a WRITE carrying
more than 3944 bytes of data fails on the client ("ZDR error: Failed to encode
COMPOUND4args"). :meth:`NfsClient.pwrite` therefore sends at most ``max_write`` bytes per
WRITE (3584 by default under NFSv4): slow, but correct.

A second libnfs 4.0 NFSv4 bug: a path-based SETATTR (``nfs_chmod``) of a file this client
holds open breaks its open-owner's sequence: the next WRITE through the open file fails with
NFS4ERR_BAD_STATEID and the next OPEN with NFS4ERR_BAD_SEQID. ``fchmod`` on the open handle
works; the FUSE layer uses it whenever the kernel names the open file (``fchmod``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from typing import Any

__all__ = ["LIBNFS_V4_WRITE_LIMIT", "NfsClient", "libnfs_unavailable_reason"]

LIBNFS_V4_WRITE_LIMIT = 3944
_V4_CHUNK = 3584

_c = ctypes
_vp = ctypes.c_void_p
_u64 = ctypes.c_uint64


class _Stat64(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "dev",
            "ino",
            "mode",
            "nlink",
            "uid",
            "gid",
            "rdev",
            "size",
            "blksize",
            "blocks",
            "atime",
            "mtime",
            "ctime",
            "atime_nsec",
            "mtime_nsec",
            "ctime_nsec",
            "used",
        )
    ]


class _StatVfs64(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "f_bsize",
            "f_frsize",
            "f_blocks",
            "f_bfree",
            "f_bavail",
            "f_files",
            "f_ffree",
            "f_favail",
            "f_fsid",
            "f_flag",
            "f_namemax",
        )
    ]


class _Url(ctypes.Structure):
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p), ("file", ctypes.c_char_p)]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Dirent(ctypes.Structure):
    pass


_Dirent._fields_ = [("next", ctypes.POINTER(_Dirent)), ("name", ctypes.c_char_p)]

_SIGNATURES: dict[str, tuple[Any, list[Any]]] = {
    "nfs_init_context": (_vp, []),
    "nfs_destroy_context": (None, [_vp]),
    "nfs_get_error": (ctypes.c_char_p, [_vp]),
    "nfs_parse_url_dir": (ctypes.POINTER(_Url), [_vp, ctypes.c_char_p]),
    "nfs_destroy_url": (None, [ctypes.POINTER(_Url)]),
    "nfs_mount": (_c.c_int, [_vp, _c.c_char_p, _c.c_char_p]),
    "nfs_umount": (_c.c_int, [_vp]),
    "nfs_stat64": (_c.c_int, [_vp, _c.c_char_p, ctypes.POINTER(_Stat64)]),
    "nfs_lstat64": (_c.c_int, [_vp, _c.c_char_p, ctypes.POINTER(_Stat64)]),
    "nfs_fstat64": (_c.c_int, [_vp, _vp, ctypes.POINTER(_Stat64)]),
    "nfs_statvfs64": (_c.c_int, [_vp, _c.c_char_p, ctypes.POINTER(_StatVfs64)]),
    "nfs_open": (_c.c_int, [_vp, _c.c_char_p, _c.c_int, ctypes.POINTER(_vp)]),
    "nfs_create": (_c.c_int, [_vp, _c.c_char_p, _c.c_int, _c.c_int, ctypes.POINTER(_vp)]),
    "nfs_close": (_c.c_int, [_vp, _vp]),
    "nfs_pread": (_c.c_int, [_vp, _vp, _u64, _u64, _c.c_char_p]),
    "nfs_pwrite": (_c.c_int, [_vp, _vp, _u64, _u64, _c.c_char_p]),
    "nfs_fsync": (_c.c_int, [_vp, _vp]),
    "nfs_ftruncate": (_c.c_int, [_vp, _vp, _u64]),
    "nfs_truncate": (_c.c_int, [_vp, _c.c_char_p, _u64]),
    "nfs_mkdir2": (_c.c_int, [_vp, _c.c_char_p, _c.c_int]),
    "nfs_rmdir": (_c.c_int, [_vp, _c.c_char_p]),
    "nfs_unlink": (_c.c_int, [_vp, _c.c_char_p]),
    "nfs_rename": (_c.c_int, [_vp, _c.c_char_p, _c.c_char_p]),
    "nfs_link": (_c.c_int, [_vp, _c.c_char_p, _c.c_char_p]),
    "nfs_symlink": (_c.c_int, [_vp, _c.c_char_p, _c.c_char_p]),
    "nfs_readlink2": (_c.c_int, [_vp, _c.c_char_p, ctypes.POINTER(_c.c_char_p)]),
    "nfs_chmod": (_c.c_int, [_vp, _c.c_char_p, _c.c_int]),
    "nfs_fchmod": (_c.c_int, [_vp, _vp, _c.c_int]),
    "nfs_chown": (_c.c_int, [_vp, _c.c_char_p, _c.c_int, _c.c_int]),
    "nfs_utimes": (_c.c_int, [_vp, _c.c_char_p, ctypes.POINTER(_Timeval)]),
    "nfs_opendir": (_c.c_int, [_vp, _c.c_char_p, ctypes.POINTER(_vp)]),
    "nfs_readdir": (ctypes.POINTER(_Dirent), [_vp, _vp]),
    "nfs_closedir": (None, [_vp, _vp]),
}


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("nfs") or "libnfs.so.13"
    lib = ctypes.CDLL(name, use_errno=True)
    for fn, (restype, argtypes) in _SIGNATURES.items():
        func = getattr(lib, fn)
        func.restype = restype
        func.argtypes = argtypes
    return lib


def libnfs_unavailable_reason() -> str | None:
    """Why libnfs cannot be used here, or ``None``."""
    try:
        _load()
    except (OSError, AttributeError) as exc:
        return f"libnfs is missing or too old ({exc}): apt-get install libnfs13"
    return None


class NfsClient:
    """One mounted NFS export; os-like methods on paths inside it (``/a/b``)."""

    def __init__(
        self, url: str, *, max_write: int | None = None, setattr_client: bool = True
    ) -> None:
        self.url = url
        self._lib = _load()
        self._lock = threading.Lock()
        # Path-based SETATTRs (chmod, chown, utimes, truncate) go through a second client of
        # their own: in libnfs 4.0 they break the NFSv4 open state of any file this client
        # holds open (see the module's note).
        self._meta = NfsClient(url, setattr_client=False) if setattr_client else self
        ctx = self._lib.nfs_init_context()
        if not ctx:
            raise OSError(0, "libnfs could not create a context")
        self._ctx = ctx
        parsed = self._lib.nfs_parse_url_dir(ctx, url.encode())
        if not parsed:
            error = self._lib.nfs_get_error(ctx) or b"bad URL"
            self._lib.nfs_destroy_context(ctx)
            raise ValueError(f"libnfs cannot parse {url!r}: {error.decode(errors='replace')}")
        try:
            rc = self._lib.nfs_mount(ctx, parsed.contents.server, parsed.contents.path)
            if rc != 0:
                message = (self._lib.nfs_get_error(ctx) or b"").decode(errors="replace")
                self._lib.nfs_destroy_context(ctx)
                raise OSError(-rc if rc < 0 else 0, f"mounting {url} failed: {message}")
        finally:
            self._lib.nfs_destroy_url(parsed)
        v4 = "version=4" in url
        self.max_write = max_write or (_V4_CHUNK if v4 else 1 << 20)

    def close(self) -> None:
        if self._meta is not self:
            self._meta.close()
        with self._lock:
            if self._ctx:
                self._lib.nfs_destroy_context(self._ctx)
                self._ctx = None

    def _check(self, rc: int, what: str, path: str = "") -> int:
        if rc < 0:
            message = (self._lib.nfs_get_error(self._ctx) or b"").decode(errors="replace")
            raise OSError(-rc, f"{what}: {message or os.strerror(-rc)}", path or None)
        return rc

    def _call(self, fn: str, *args: Any, what: str = "", path: str = "") -> int:
        with self._lock:
            return self._check(getattr(self._lib, fn)(self._ctx, *args), what or fn, path)

    # --- metadata ----------------------------------------------------------------------
    def stat(self, path: str, *, follow: bool = False) -> dict[str, Any]:
        st = _Stat64()
        fn = "nfs_stat64" if follow else "nfs_lstat64"
        self._call(fn, path.encode(), ctypes.byref(st), path=path)
        return _stat_dict(st)

    def fstat(self, fh: int) -> dict[str, Any]:
        st = _Stat64()
        self._call("nfs_fstat64", _vp(fh), ctypes.byref(st))
        return _stat_dict(st)

    def statvfs(self, path: str) -> dict[str, int]:
        sv = _StatVfs64()
        self._call("nfs_statvfs64", path.encode(), ctypes.byref(sv), path=path)
        names = [field[0] for field in _StatVfs64._fields_]
        return {name: getattr(sv, name) for name in names if name != "f_fsid"}

    def chmod(self, path: str, mode: int) -> None:
        self._meta._call("nfs_chmod", path.encode(), mode, path=path)

    def fchmod(self, fh: int, mode: int) -> None:
        """chmod through an open file (its open stateid): see the module's note on chmod."""
        self._call("nfs_fchmod", _vp(fh), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._meta._call("nfs_chown", path.encode(), uid, gid, path=path)

    def utimes(self, path: str, atime_ns: int, mtime_ns: int) -> None:
        times = (_Timeval * 2)(
            _Timeval(atime_ns // 10**9, (atime_ns % 10**9) // 1000),
            _Timeval(mtime_ns // 10**9, (mtime_ns % 10**9) // 1000),
        )
        self._meta._call("nfs_utimes", path.encode(), times, path=path)

    def truncate(self, path: str, length: int) -> None:
        self._meta._call("nfs_truncate", path.encode(), length, path=path)

    def readlink(self, path: str) -> str:
        out = ctypes.c_char_p()
        self._call("nfs_readlink2", path.encode(), ctypes.byref(out), path=path)
        return (out.value or b"").decode(errors="surrogateescape")

    # --- namespace ---------------------------------------------------------------------
    def mkdir(self, path: str, mode: int) -> None:
        self._call("nfs_mkdir2", path.encode(), mode, path=path)

    def rmdir(self, path: str) -> None:
        self._call("nfs_rmdir", path.encode(), path=path)

    def unlink(self, path: str) -> None:
        self._call("nfs_unlink", path.encode(), path=path)

    def rename(self, old: str, new: str) -> None:
        self._call("nfs_rename", old.encode(), new.encode(), path=old)

    def link(self, existing: str, new: str) -> None:
        self._call("nfs_link", existing.encode(), new.encode(), path=new)

    def symlink(self, target: str, link_path: str) -> None:
        self._call("nfs_symlink", target.encode(), link_path.encode(), path=link_path)

    def listdir(self, path: str) -> list[str]:
        handle = _vp()
        self._call("nfs_opendir", path.encode(), ctypes.byref(handle), path=path)
        names = []
        with self._lock:
            try:
                while True:
                    entry = self._lib.nfs_readdir(self._ctx, handle)
                    if not entry:
                        break
                    name = (entry.contents.name or b"").decode(errors="surrogateescape")
                    if name not in (".", ".."):
                        names.append(name)
            finally:
                self._lib.nfs_closedir(self._ctx, handle)
        return names

    # --- files -------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        handle = _vp()
        self._call("nfs_open", path.encode(), flags, ctypes.byref(handle), path=path)
        return int(handle.value or 0)

    def create(self, path: str, flags: int, mode: int) -> int:
        handle = _vp()
        self._call("nfs_create", path.encode(), flags, mode, ctypes.byref(handle), path=path)
        return int(handle.value or 0)

    def close_file(self, fh: int) -> None:
        self._call("nfs_close", _vp(fh))

    def pread(self, fh: int, size: int, offset: int) -> bytes:
        buf = ctypes.create_string_buffer(size)
        n = self._call("nfs_pread", _vp(fh), offset, size, buf)
        return buf.raw[:n]

    def pwrite(self, fh: int, data: bytes, offset: int) -> int:
        done = 0
        while done < len(data):
            chunk = data[done : done + self.max_write]
            n = self._call("nfs_pwrite", _vp(fh), offset + done, len(chunk), chunk)
            if n <= 0:
                break
            done += n
        return done

    def fsync(self, fh: int) -> None:
        self._call("nfs_fsync", _vp(fh))

    def ftruncate(self, fh: int, length: int) -> None:
        self._call("nfs_ftruncate", _vp(fh), length)


def _stat_dict(st: _Stat64) -> dict[str, Any]:
    return {
        "st_mode": int(st.mode),
        "st_ino": int(st.ino),
        "st_nlink": int(st.nlink),
        "st_uid": int(st.uid),
        "st_gid": int(st.gid),
        "st_size": int(st.size),
        "st_blocks": int(st.blocks),
        "st_atime": int(st.atime) * 10**9 + int(st.atime_nsec),
        "st_mtime": int(st.mtime) * 10**9 + int(st.mtime_nsec),
        "st_ctime": int(st.ctime) * 10**9 + int(st.ctime_nsec),
    }
