"""What a simulator is asked to do: :class:`SimFSConfig`, validated once, JSON in and out."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from efsray.errors import ConfigError
from efsray.simfs.profiles import LatencyProfile, get_profile

__all__ = ["SimFSConfig", "default_control_path"]


def default_control_path(mountpoint: str | os.PathLike[str]) -> Path:
    """Where the control socket of the simulator mounted at ``mountpoint`` lives by default.

    ``$TMPDIR/efsray-simfs-UID/HASH.sock``, HASH naming the mount point's absolute path:
    short enough for a Unix socket whatever the mount point, outside the mount, private to the
    user. Computed without touching the filesystem (no symlink resolution), so that it works
    while the mount hangs: spell the mount point the same way, or pass the socket path.
    """
    absolute = os.path.abspath(os.fspath(mountpoint))
    digest = hashlib.sha256(absolute.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return Path(tempfile.gettempdir()) / f"efsray-simfs-{os.getuid()}" / f"{digest}.sock"


@dataclass(frozen=True, slots=True)
class SimFSConfig:
    """One simulated mount.

    ``profile`` is a built-in profile name and ``latency`` overrides some of its fields (for
    example ``{"write": 0.005, "jitter": 0.2}``, seconds). ``attr_timeout`` is how long the
    kernel may cache attributes and lookups (0: every lookup is a round trip, the
    deterministic worst case; EFS clients cache 3-60 s). ``seed`` makes jitter and
    probabilistic faults reproducible. ``nfs_url`` (``nfs://HOST/EXPORT?version=4&nfsport=N``)
    switches to the real-NFS mode: operations go over NFS (libnfs) to that server instead of
    to ``backing``, which then names the server's exported directory (for checks only).
    """

    mountpoint: Path
    backing: Path
    profile: str = "none"
    latency: Mapping[str, Any] = field(default_factory=dict)
    seed: int | None = None
    control: Path | None = None
    attr_timeout: float = 0.0
    hard_remove: bool = False
    allow_other: bool = False
    nfs_url: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "mountpoint", Path(self.mountpoint))
        object.__setattr__(self, "backing", Path(self.backing))
        if self.control is not None:
            object.__setattr__(self, "control", Path(self.control))
        object.__setattr__(self, "latency", dict(self.latency))
        self.latency_profile()  # validates the name and the overrides
        if (
            isinstance(self.attr_timeout, bool)
            or not isinstance(self.attr_timeout, int | float)
            or not math.isfinite(self.attr_timeout)
            or not 0 <= self.attr_timeout <= 3600
        ):
            raise ConfigError(
                f"attr_timeout must be between 0 and 3600 seconds, got {self.attr_timeout!r}"
            )
        if self.nfs_url is not None and not (
            isinstance(self.nfs_url, str) and self.nfs_url.startswith("nfs://")
        ):
            raise ConfigError(
                f"nfs_url must be a libnfs URL like nfs://127.0.0.1/export?version=4&nfsport="
                f"2049, got {self.nfs_url!r}"
            )
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    def latency_profile(self) -> LatencyProfile:
        return get_profile(self.profile, **self.latency)

    @property
    def control_path(self) -> Path:
        return self.control if self.control is not None else default_control_path(self.mountpoint)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mountpoint": str(self.mountpoint),
            "backing": str(self.backing),
            "profile": self.profile,
            "latency": dict(self.latency),
            "seed": self.seed,
            "control": None if self.control is None else str(self.control),
            "attr_timeout": self.attr_timeout,
            "hard_remove": self.hard_remove,
            "allow_other": self.allow_other,
            "nfs_url": self.nfs_url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SimFSConfig:
        known = {
            "mountpoint",
            "backing",
            "profile",
            "latency",
            "seed",
            "control",
            "attr_timeout",
            "hard_remove",
            "allow_other",
            "nfs_url",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown simfs setting(s): {', '.join(unknown)}")
        return cls(**dict(data))

    def check_paths(self) -> tuple[Path, Path]:
        """The real mount point and backing directory, or a :class:`ConfigError` saying why not.

        Neither may contain the other: a backing directory that contains the mount point
        would show the mount inside itself, and every walk of it would recurse into FUSE.
        """
        mnt = Path(os.path.realpath(self.mountpoint))
        back = Path(os.path.realpath(self.backing))
        if not mnt.is_dir():
            raise ConfigError(f"mount point {self.mountpoint} is not a directory; create it first")
        if not back.is_dir():
            raise ConfigError(
                f"backing directory {self.backing} is not a directory; create it first "
                "(it holds the simulated volume's files)"
            )
        if mnt == back or mnt.is_relative_to(back) or back.is_relative_to(mnt):
            raise ConfigError(
                f"mount point {mnt} and backing directory {back} must not contain each other; "
                "put them side by side"
            )
        return mnt, back
