"""Read the kernel's mount table, ``/proc/self/mountinfo`` (proc(5)).

One line per mount::

    36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)

mount id, parent id, major:minor, root, mount point, per-mount options, zero or more optional
fields (``shared:N``, ``master:N``, ``propagate_from:N``, ``unbindable``), a ``-`` separator,
filesystem type, source and per-superblock options. The kernel escapes space, tab, newline and
backslash in paths as octal (``\\040``, ``\\011``, ``\\012``, ``\\134``).

Reading the table never touches the mounted filesystems, so it is safe on a hung mount;
matching a path to its mount is pure string work for the same reason (no ``stat``, no
``realpath``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from efsray.errors import MountError
from efsray.mount.options import split_options

__all__ = [
    "NFS_FS_TYPES",
    "MountInfo",
    "find_mount",
    "mount_at",
    "parse_mountinfo",
    "parse_mountinfo_line",
    "read_mountinfo",
    "unescape",
]

logger = logging.getLogger("efsray.mount")

MOUNTINFO = "/proc/self/mountinfo"
NFS_FS_TYPES: frozenset[str] = frozenset({"nfs", "nfs4", "efs"})
_OCTAL = re.compile(r"\\([0-7]{3})")


class _HasMountPoint(Protocol):
    @property
    def mount_point(self) -> str: ...


_M = TypeVar("_M", bound=_HasMountPoint)


@dataclass(frozen=True, slots=True)
class MountInfo:
    """One line of mountinfo, unescaped."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    mount_options: tuple[str, ...]
    optional_fields: tuple[str, ...]
    fs_type: str
    source: str
    super_options: tuple[str, ...]

    @property
    def options(self) -> tuple[str, ...]:
        """Per-mount then per-superblock options, each name once (the superblock's value wins,
        which is where NFS reports ``vers``, ``rsize``, ``hard``...)."""
        merged: dict[str, str] = {}
        for option in (*self.mount_options, *self.super_options):
            merged[option.split("=", 1)[0]] = option
        return tuple(merged.values())

    @property
    def is_nfs(self) -> bool:
        """True for NFS (and so EFS) mounts: ``nfs``, ``nfs4``."""
        return self.fs_type in NFS_FS_TYPES

    @property
    def server(self) -> str | None:
        """The host of an NFS source (``host:/export``), brackets of IPv6 removed; else None."""
        host, _, export = self._split_source()
        return host if export is not None else None

    @property
    def export(self) -> str | None:
        """The exported path of an NFS source (``/`` in ``fs-...:/``); else None."""
        return self._split_source()[2]

    def _split_source(self) -> tuple[str, str, str | None]:
        source = self.source
        if source.startswith("["):
            host, sep, rest = source[1:].partition("]:")
            return (host, sep, rest) if sep else (source, "", None)
        host, sep, rest = source.partition(":")
        return (host, sep, rest) if sep and host else (source, "", None)


def unescape(text: str) -> str:
    """Undo the kernel's octal escaping of paths in mountinfo and mountstats (``\\040``)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo_line(line: str) -> MountInfo:
    """Parse one mountinfo line. Raises :class:`MountError` saying what is malformed."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError:
        raise MountError(
            f"malformed mountinfo line (no ' - ' separator after 6 fields): {line[:200]!r}"
        ) from None
    tail = fields[sep + 1 :]
    if len(tail) not in (2, 3) or not tail[0]:
        raise MountError(
            f"malformed mountinfo line (expected 'FSTYPE SOURCE OPTIONS' after ' - '): "
            f"{line[:200]!r}"
        )
    head = fields[:6]
    if any(not f for f in head):
        raise MountError(f"malformed mountinfo line (empty field): {line[:200]!r}")
    mount_id, parent_id, dev = head[0], head[1], head[2]
    major, colon, minor = dev.partition(":")
    numbers = (mount_id, parent_id, major, minor)
    if not colon or not all(n.isascii() and n.isdigit() for n in numbers):
        raise MountError(
            f"malformed mountinfo line (ids and major:minor must be numbers): {line[:200]!r}"
        )
    optional = fields[6:sep]
    if any(not f for f in optional):
        raise MountError(f"malformed mountinfo line (empty optional field): {line[:200]!r}")
    return MountInfo(
        mount_id=int(mount_id),
        parent_id=int(parent_id),
        major=int(major),
        minor=int(minor),
        root=unescape(head[3]),
        mount_point=unescape(head[4]),
        mount_options=tuple(unescape(o) for o in split_options(head[5])),
        optional_fields=tuple(optional),
        fs_type=unescape(tail[0]),
        source=unescape(tail[1]),
        super_options=tuple(unescape(o) for o in split_options(tail[2] if len(tail) > 2 else "")),
    )


def parse_mountinfo(text: str, *, strict: bool = False) -> list[MountInfo]:
    """Parse a whole mountinfo file. Blank lines are skipped; a malformed line raises
    :class:`MountError` when ``strict``, else is logged and skipped."""
    mounts = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            mounts.append(parse_mountinfo_line(line))
        except MountError as exc:
            if strict:
                raise MountError(f"line {number}: {exc}") from None
            logger.warning("skipping mountinfo line %d: %s", number, exc)
    return mounts


def read_mountinfo(path: str | os.PathLike[str] = MOUNTINFO) -> list[MountInfo]:
    """Read and parse a mountinfo file (default: this process's mount namespace)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as exc:
        raise MountError(
            f"cannot read the mount table {os.fspath(path)!r}: {exc.strerror or exc}; "
            "is /proc mounted?"
        ) from exc
    return parse_mountinfo(text)


def _normalize(path: str | os.PathLike[str]) -> str:
    # abspath is string work only: it never stats, so it cannot block on a hung mount.
    return os.path.abspath(os.fspath(path))


def mount_at(mounts: Iterable[MountInfo], path: str | os.PathLike[str]) -> MountInfo | None:
    """The mount whose mount point is exactly ``path`` (the topmost, when stacked), or None."""
    target = _normalize(path)
    found = None
    for mount in mounts:
        if mount.mount_point == target:
            found = mount  # later lines are mounted on top of earlier ones
    return found


def find_mount(mounts: Iterable[_M], path: str | os.PathLike[str]) -> _M | None:
    """The mount that contains ``path``: the longest mount point that is ``path`` or one of its
    parents (symlinks are not resolved; the later of two equal ones, the one on top). Takes
    any rows with a ``mount_point`` (mountinfo's, mountstats'). None only for an empty table."""
    target = _normalize(path)
    best: _M | None = None
    for mount in mounts:
        point = mount.mount_point
        inside = target == point or point == "/" or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best.mount_point)):
            best = mount
    return best
