"""Latency profiles: how long each kind of filesystem operation takes on the simulated volume.

A profile gives a delay per *category* of operation (a data read, a data write, an fsync, a
metadata lookup, a namespace change, a directory listing). Every FUSE operation belongs to
one category (:data:`OP_CATEGORY`). The delay models one NFS round trip to EFS; it is
slept inside the FUSE handler before the operation runs, so the caller sees it exactly as it
would see a network round trip.

The built-in figures are approximations of what AWS documents and what is commonly measured
from one EC2 client in the same availability zone, not measurements of this machine:

========== =========== ============ ========== ========== =========== ============
profile    read (ms)   write (ms)   fsync (ms) metadata   namespace   readdir
========== =========== ============ ========== ========== =========== ============
efs-gp     0.6         2.7          2.7        1.0        2.7         1.0 per RPC
efs-maxio  1.5          4.0          4.0        2.5        4.0         2.5 per RPC
none       0           0            0          0          0           0
========== =========== ============ ========== ========== =========== ============

``readdir`` is charged once per NFS READDIR reply, which carries about
``readdir_entries_per_rpc`` names. ``jitter`` spreads each delay uniformly over
``[d * (1 - jitter), d * (1 + jitter)]``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from efsray.errors import ConfigError

__all__ = [
    "CATEGORIES",
    "OP_CATEGORY",
    "OP_KINDS",
    "PROFILES",
    "LatencyProfile",
    "get_profile",
]

#: Every FUSE operation the simulated filesystem implements, by the category it is charged as.
#: ``getattr`` also stands for LOOKUP: libfuse's high-level API answers lookups with getattr.
OP_CATEGORY: Mapping[str, str] = {
    "read": "read",
    "write": "write",
    "fsync": "fsync",
    "fsyncdir": "fsync",
    "flush": "fsync",  # close() on NFS flushes dirty pages and waits: a write-class round trip
    "getattr": "metadata",
    "access": "metadata",
    "readlink": "metadata",
    "statfs": "metadata",
    "open": "metadata",
    "opendir": "metadata",
    "getxattr": "metadata",
    "listxattr": "metadata",
    "create": "namespace",
    "mknod": "namespace",
    "mkdir": "namespace",
    "unlink": "namespace",
    "rmdir": "namespace",
    "symlink": "namespace",
    "rename": "namespace",
    "link": "namespace",
    "chmod": "namespace",
    "chown": "namespace",
    "truncate": "namespace",
    "utimens": "namespace",
    "setxattr": "namespace",
    "removexattr": "namespace",
    "fallocate": "write",
    "readdir": "readdir",
    "release": "none",  # asynchronous in the kernel: nobody waits for it
    "releasedir": "none",
}
OP_KINDS: frozenset[str] = frozenset(OP_CATEGORY)
CATEGORIES: tuple[str, ...] = ("read", "write", "fsync", "metadata", "namespace", "readdir")


@dataclass(frozen=True, slots=True)
class LatencyProfile:
    """Per-category delays in seconds, plus jitter. Immutable; build variants with ``replace``."""

    name: str
    read: float = 0.0
    write: float = 0.0
    fsync: float = 0.0
    metadata: float = 0.0
    namespace: float = 0.0
    readdir: float = 0.0
    readdir_entries_per_rpc: int = 128
    jitter: float = 0.0

    def __post_init__(self) -> None:
        for field in (*CATEGORIES, "jitter"):
            value = getattr(self, field)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(
                    f"latency profile {self.name!r}: {field} must be a finite number of "
                    f"seconds >= 0, got {value!r}"
                )
        if self.jitter > 1:
            raise ConfigError(
                f"latency profile {self.name!r}: jitter is a fraction of the delay in [0, 1], "
                f"got {self.jitter!r}"
            )
        if self.readdir_entries_per_rpc < 1:
            raise ConfigError(
                f"latency profile {self.name!r}: readdir_entries_per_rpc must be >= 1, "
                f"got {self.readdir_entries_per_rpc!r}"
            )

    def base_delay(self, op: str, entries: int = 0) -> float:
        """The delay for one ``op`` before jitter (``entries``: names a readdir returned)."""
        category = OP_CATEGORY.get(op, "metadata")
        if category == "none":
            return 0.0
        delay = float(getattr(self, category))
        if category == "readdir":
            delay *= max(1, math.ceil(entries / self.readdir_entries_per_rpc))
        return delay

    def delay(self, op: str, rng: random.Random, entries: int = 0) -> float:
        """The delay for one ``op`` with jitter drawn from ``rng``."""
        base = self.base_delay(op, entries)
        if base <= 0 or self.jitter <= 0:
            return base
        return base * rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def with_overrides(self, overrides: Mapping[str, Any]) -> LatencyProfile:
        """A copy with some fields replaced; unknown field names are a :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(self)} - {"name"}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown latency setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return dataclasses.replace(self, **dict(overrides))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_MS = 1e-3

PROFILES: Mapping[str, LatencyProfile] = {
    "efs-gp": LatencyProfile(
        name="efs-gp",
        read=0.6 * _MS,
        write=2.7 * _MS,
        fsync=2.7 * _MS,
        metadata=1.0 * _MS,
        namespace=2.7 * _MS,
        readdir=1.0 * _MS,
    ),
    "efs-maxio": LatencyProfile(
        name="efs-maxio",
        read=1.5 * _MS,
        write=4.0 * _MS,
        fsync=4.0 * _MS,
        metadata=2.5 * _MS,
        namespace=4.0 * _MS,
        readdir=2.5 * _MS,
    ),
    "none": LatencyProfile(name="none"),
}


def get_profile(name: str, **overrides: Any) -> LatencyProfile:
    """The built-in profile ``name`` with optional field overrides (seconds, jitter)."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown latency profile {name!r}; choose one of {', '.join(sorted(PROFILES))}"
        ) from None
    return profile.with_overrides(overrides) if overrides else profile
