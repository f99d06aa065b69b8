"""The one source of truth for EFS NFS mount options.

``EFSMountConfig.get_mount_options()``, the fstab line, the compose ``driver_opts`` and the
compose linter all read these constants, so the shipped files cannot drift from the code.
Values are AWS's recommendations (efs-utils defaults; see docs/ and ../shared/DESIGN.md).
"""

from __future__ import annotations

__all__ = ["FSTAB_EXTRA_OPTIONS", "HARMFUL_OPTIONS", "IGNORED_OPTIONS", "RECOMMENDED_OPTIONS"]

# In the order AWS documents them. nfsvers is first; the caller's version replaces it.
RECOMMENDED_OPTIONS: tuple[str, ...] = (
    "nfsvers=4.1",
    "rsize=1048576",
    "wsize=1048576",
    "hard",
    "timeo=600",
    "retrans=2",
    "noresvport",
)

# Added to an /etc/fstab line: wait for the network, and do not block boot if EFS is down.
FSTAB_EXTRA_OPTIONS: tuple[str, ...] = ("_netdev", "nofail")

# Options that hurt correctness or performance on EFS, and why.
HARMFUL_OPTIONS: dict[str, str] = {
    "soft": "soft mounts return EIO on timeouts and can silently corrupt data; use hard",
    "noac": "disables attribute caching: every stat becomes a round trip to EFS",
    "actimeo=0": "disables attribute caching: every stat becomes a round trip to EFS",
    "lookupcache=none": "disables lookup caching: every path lookup becomes a round trip",
}

# Options the kernel accepts and ignores.
IGNORED_OPTIONS: dict[str, str] = {
    "intr": "ignored by Linux since 2.6.25 (hard mounts are killable with SIGKILL); remove it",
    "nointr": "ignored by Linux since 2.6.25; remove it",
}
