"""FUSE availability, the mount table, and unmounting."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from efsray.errors import MountError

__all__ = [
    "ensure_unmounted",
    "fuse_unavailable_reason",
    "fuse_version",
    "is_mounted",
    "unmount",
]

log = logging.getLogger("efsray.simfs")


def fuse_unavailable_reason(
    *, device: str = "/dev/fuse", fusermount: str = "fusermount3"
) -> str | None:
    """Why FUSE cannot be used here (a sentence saying what to install), or ``None`` if it can.

    ``device`` and ``fusermount`` name what to look for (tests point them elsewhere).
    """
    if not sys.platform.startswith("linux"):
        return f"the simulated filesystem needs Linux FUSE; this is {sys.platform}"
    if not os.path.exists(device):
        return (
            f"{device} does not exist: load the fuse module (modprobe fuse) or, in a "
            "container, run with --device /dev/fuse --cap-add SYS_ADMIN"
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return (
            f"{device} is not readable and writable by uid {os.getuid()}; "
            "add the user to the 'fuse' group or fix the device's mode"
        )
    if shutil.which(fusermount) is None:
        return f"{fusermount} is not installed: apt-get install fuse3"
    try:
        version = fuse_version()
    except ImportError as exc:
        return f"mfusepy is not importable ({exc}): pip install 'efsray[fuse]'"
    except (OSError, AttributeError) as exc:
        # mfusepy raises EnvironmentError when libfuse cannot be found or loaded
        return f"libfuse3 could not be loaded ({exc}): apt-get install libfuse3-3"
    if version[0] != 3:
        return f"libfuse {version[0]}.{version[1]} was found; the simulator needs libfuse 3"
    return None


def fuse_version() -> tuple[int, int]:
    """The (major, minor) version of the libfuse that mfusepy loads."""
    import mfusepy

    return int(mfusepy.fuse_version_major), int(mfusepy.fuse_version_minor)


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _mountinfo_fstype(path: str) -> str | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    found = None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        if _unescape(fields[4]) == path:
            found = right.split()[0] if right.split() else ""  # the last mount on top wins
    return found


def is_mounted(path: str | os.PathLike[str], *, fstype_prefix: str = "fuse") -> bool:
    """True when a filesystem whose type starts with ``fstype_prefix`` is mounted at ``path``.

    Reads the mount table only: it never touches the path itself, which may be hung.
    """
    real = os.path.abspath(os.fspath(path))
    fstype = _mountinfo_fstype(real)
    return fstype is not None and fstype.startswith(fstype_prefix)


def unmount(path: str | os.PathLike[str], *, lazy: bool = False, timeout: float = 30.0) -> None:
    """Unmount the FUSE filesystem at ``path`` with fusermount3 (``lazy``: detach even if busy).

    Raises :class:`MountError` with fusermount3's message when it refuses.
    """
    target = os.path.abspath(os.fspath(path))
    command = ["fusermount3", "-u", *(["-z"] if lazy else []), target]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MountError(f"{' '.join(command)} failed: {exc}") from exc
    if done.returncode != 0:
        raise MountError(
            f"{' '.join(command)} exited with {done.returncode}: "
            f"{done.stderr.strip() or 'no message'}"
        )
    log.info("unmounted %s%s", target, " (lazily)" if lazy else "")


def ensure_unmounted(path: Path) -> None:
    """Unmount ``path`` if a FUSE filesystem is there: normally, else lazily. Never hangs."""
    if not is_mounted(path):
        return
    try:
        unmount(path)
    except MountError as exc:
        log.warning("%s; detaching lazily", exc)
        unmount(path, lazy=True)
