"""The one source of truth for EFS NFS mount options.

``EFSMountConfig.get_mount_options()``, the fstab line, the compose ``driver_opts`` and the
compose linter all read these constants, so the shipped files cannot drift from the code.
Values are AWS's recommendations (efs-utils defaults; see docs/ and ../shared/DESIGN.md).

Below the constants are the small pure functions every other module uses to read, compare and
merge option lists (``"rsize=1048576"`` style strings), so that ``vers=4.1`` (what the kernel
reports) and ``nfsvers=4.1`` (what we ask for) are one option everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "DEFAULT_THROUGHPUT_MODE",
    "EFS_HELPER_OPTIONS",
    "FSTAB_EXTRA_OPTIONS",
    "HARMFUL_OPTIONS",
    "IGNORED_OPTIONS",
    "MOUNT_TYPES",
    "NFS_PORT",
    "NFS_VERSIONS",
    "PERFORMANCE_MODES",
    "RECOMMENDED_OPTIONS",
    "THROUGHPUT_MODES",
    "USERSPACE_OPTIONS",
    "harmful_reason",
    "merge_options",
    "option_key",
    "option_value",
    "split_options",
]

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

# --- Added by the mount subsystem ------------------------------------------------------------

NFS_PORT = 2049
"""EFS mount targets serve NFS on TCP 2049 only; the security group must allow it."""

NFS_VERSIONS: tuple[str, ...] = ("4.1", "4.0")
"""What EFS speaks. 4.1 is AWS's advice; 4.0 works; EFS has no NFSv3 and no NFSv4.2."""

PERFORMANCE_MODES: tuple[str, ...] = ("generalPurpose", "maxIO")
"""EFS performance modes. Max I/O has higher per-operation latency; AWS advises General
Purpose for nearly every workload (and Elastic throughput requires it)."""

THROUGHPUT_MODES: tuple[str, ...] = ("elastic", "bursting", "provisioned")
"""EFS throughput modes: a property of the file system, not a mount option."""

DEFAULT_THROUGHPUT_MODE = "elastic"
"""AWS's default and recommendation for new file systems: pay per use, scales with load."""

MOUNT_TYPES: tuple[str, ...] = ("nfs4", "efs")
"""``nfs4``: the kernel NFS client (``mount -t nfs4``, needs nfs-common/nfs-utils).
``efs``: the amazon-efs-utils helper (``mount -t efs``), which adds TLS, IAM, access points."""

# Options only amazon-efs-utils understands (`mount -t efs`), with what they do.
EFS_HELPER_OPTIONS: dict[str, str] = {
    "tls": "encrypt traffic in transit (stunnel or efs-proxy on 127.0.0.1)",
    "iam": "authenticate with the instance's IAM role; requires tls",
    "accesspoint": "mount through an EFS access point (fixed uid/gid and root); requires tls",
    "mounttargetip": "mount a specific mount target IP instead of resolving the DNS name",
}

# Understood by mount(8) or /etc/fstab, never by the kernel: a compose volume's driver_opts
# (which Docker passes straight to mount(2)) must not contain them.
USERSPACE_OPTIONS: frozenset[str] = frozenset(
    {"_netdev", "nofail", "auto", "noauto", "user", "nouser", "users", "defaults", "owner"}
)

_BOOL_PAIRS = {"soft": "hard", "ro": "rw", "async": "sync"}
_ALIASES = {"vers": "nfsvers"}


def split_options(text: str) -> list[str]:
    """``"a,b=1,,c"`` -> ``["a", "b=1", "c"]`` (blank entries and surrounding space dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def option_key(option: str) -> str:
    """The name two options must share to conflict: ``rsize=65536`` and ``rsize=1048576``
    share ``rsize``; ``soft`` and ``hard`` share ``hard``; ``noac`` and ``ac`` share ``ac``;
    ``vers=4.1`` and ``nfsvers=4.1`` share ``nfsvers``."""
    name = option.split("=", 1)[0].strip().lower()
    name = _ALIASES.get(name, name)
    if "=" not in option:
        name = _BOOL_PAIRS.get(name, name)
        if name.startswith("no") and len(name) > 2:
            name = name[2:]
    return name


def option_value(option: str) -> str | None:
    """The value after ``=``, or None for a flag; integers normalised (``"0600"`` -> ``"600"``)."""
    if "=" not in option:
        return None
    value = option.split("=", 1)[1].strip()
    return str(int(value)) if value.isascii() and value.isdigit() else value


def _canonical(option: str) -> str:
    """The option as it should be compared: lower-case name, alias resolved, value normalised."""
    name = option.split("=", 1)[0].strip().lower()
    name = _ALIASES.get(name, name)
    value = option_value(option)
    return name if value is None else f"{name}={value}"


def harmful_reason(option: str) -> str | None:
    """Why ``option`` is harmful on EFS, or None. Also knows the kernel's spelling of a
    disabled attribute cache (``acregmax=0`` and friends, which is how ``actimeo=0`` shows)."""
    canonical = _canonical(option)
    if canonical in HARMFUL_OPTIONS:
        return HARMFUL_OPTIONS[canonical]
    if canonical in ("acregmax=0", "acdirmax=0"):
        return HARMFUL_OPTIONS["actimeo=0"]
    return None


def merge_options(base: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """``base`` with every override applied: an override replaces the base option with the same
    :func:`option_key` in place (so ``soft`` replaces ``hard``), or is appended. The result has
    no two options with the same key; the last override of a key wins."""
    merged: dict[str, str] = {}
    for option in base:
        merged[option_key(option)] = option
    for option in overrides:
        merged[option_key(option)] = option
    return list(merged.values())
