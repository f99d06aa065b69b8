"""``EFSMountConfig``: what to mount, where, and with which options.

A frozen value object, validated once when built. It renders the same mount four ways, all
from :mod:`efsray.mount.options`: the option list (``get_mount_options()``), the mount command
(``mount_argv()`` / ``mount_command()``), an ``/etc/fstab`` line (``fstab_line()``) and the
``driver_opts`` of a Docker Compose NFS volume (``compose_driver_opts()``).
"""

from __future__ import annotations

import os
import re
import shlex
import warnings
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any

from efsray.config import is_hostname
from efsray.errors import ConfigError
from efsray.mount.options import (
    DEFAULT_THROUGHPUT_MODE,
    EFS_HELPER_OPTIONS,
    FSTAB_EXTRA_OPTIONS,
    IGNORED_OPTIONS,
    MOUNT_TYPES,
    NFS_VERSIONS,
    PERFORMANCE_MODES,
    RECOMMENDED_OPTIONS,
    THROUGHPUT_MODES,
    USERSPACE_OPTIONS,
    harmful_reason,
    merge_options,
    option_key,
    split_options,
)

if TYPE_CHECKING:
    from efsray.config import Settings

__all__ = ["EFSMountConfig", "MountOptionWarning"]

_OPTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(=[A-Za-z0-9_.:/@+\-\[\]]*)?$")
_ACCESS_POINT = re.compile(r"^fsap-[0-9a-f]{8,40}$")
_EFS_DNS = re.compile(
    r"^(?P<fs>fs-[0-9a-f]{8,40})\.efs\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?\.?$"
)
_HELPER_KEYS = frozenset(EFS_HELPER_OPTIONS)


class MountOptionWarning(UserWarning):
    """A mount setting that works but is probably a mistake (Max I/O, ``soft``, ``noac``...)."""


@dataclass(frozen=True, slots=True)
class EFSMountConfig:
    """An EFS mount: the seed's five arguments, plus keyword-only extras.

    ``throughput_mode`` defaults to ``"elastic"`` (AWS's default for new file systems); it
    describes the file system and changes no mount option. ``extra_options`` override the
    recommended options by name (``"timeo=300"`` replaces ``timeo=600``, ``"soft"`` replaces
    ``hard``) or add new ones; harmful ones warn (:class:`MountOptionWarning`), ignored ones
    (``intr``) are dropped with a warning. ``mount_type="efs"`` mounts through
    amazon-efs-utils, which is required for ``tls``, ``iam`` and ``access_point``.
    Invalid values raise :class:`~efsray.errors.ConfigError`.
    """

    efs_dns_name: str
    mount_path: str
    nfs_version: str = "4.1"
    performance_mode: str = "generalPurpose"
    throughput_mode: str = DEFAULT_THROUGHPUT_MODE
    _: KW_ONLY
    mount_type: str = "nfs4"
    export_path: str = "/"
    extra_options: tuple[str, ...] = ()
    tls: bool = False
    iam: bool = False
    access_point: str | None = None
    mount_target_ip: str | None = None
    _warnings: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "mount_path", _check_mount_path(self.mount_path))
        set_(self, "nfs_version", str(self.nfs_version).strip())
        set_(self, "export_path", _check_export_path(self.export_path))
        raw = self.extra_options
        extras = split_options(raw) if isinstance(raw, str) else [str(o).strip() for o in raw]
        notes: list[str] = []
        kept = []
        for option in extras:
            _check_option(option)
            ignored = IGNORED_OPTIONS.get(option.lower())
            if ignored:
                notes.append(f"mount option {option!r} dropped: {ignored}")
                continue
            kept.append(option)
        set_(self, "extra_options", tuple(kept))
        self._validate()
        for option in self.get_mount_options():
            reason = harmful_reason(option)
            if reason:
                notes.append(f"mount option {option!r} is harmful on EFS: {reason}")
        if self.performance_mode == "maxIO":
            notes.append(
                "performance_mode 'maxIO' has higher per-operation latency than "
                "'generalPurpose', which AWS recommends for almost every workload (and which "
                "Elastic throughput requires); the mount options are the same for both"
            )
        if self.nfs_version == "4.0":
            notes.append("nfs_version '4.0' works, but AWS recommends NFSv4.1 for EFS")
        set_(self, "_warnings", tuple(notes))
        for note in notes:
            warnings.warn(note, MountOptionWarning, stacklevel=3)

    def _validate(self) -> None:
        if not isinstance(self.efs_dns_name, str) or not is_hostname(self.efs_dns_name):
            raise ConfigError(
                f"efs_dns_name {self.efs_dns_name!r} is not a host name; use the file system's "
                "DNS name, e.g. fs-0123456789abcdef0.efs.us-east-1.amazonaws.com"
            )
        if self.nfs_version not in NFS_VERSIONS:
            raise ConfigError(
                f"nfs_version {self.nfs_version!r} is not supported by EFS; use one of "
                f"{', '.join(NFS_VERSIONS)} (4.1 is recommended; EFS has no NFSv3 or NFSv4.2)"
            )
        if self.performance_mode not in PERFORMANCE_MODES:
            raise ConfigError(
                f"performance_mode {self.performance_mode!r} is unknown; use one of "
                f"{', '.join(PERFORMANCE_MODES)} (generalPurpose is recommended)"
            )
        if self.throughput_mode not in THROUGHPUT_MODES:
            raise ConfigError(
                f"throughput_mode {self.throughput_mode!r} is unknown; use one of "
                f"{', '.join(THROUGHPUT_MODES)} (default {DEFAULT_THROUGHPUT_MODE})"
            )
        if self.mount_type not in MOUNT_TYPES:
            raise ConfigError(
                f"mount_type {self.mount_type!r} is unknown; use 'nfs4' (kernel NFS client) "
                "or 'efs' (amazon-efs-utils, for tls/iam/access points)"
            )
        if self.access_point is not None and not _ACCESS_POINT.match(self.access_point):
            raise ConfigError(
                f"access_point {self.access_point!r} is not an access point id such as "
                "fsap-0123456789abcdef0"
            )
        if self.mount_target_ip is not None and not _is_ip(self.mount_target_ip):
            raise ConfigError(
                f"mount_target_ip {self.mount_target_ip!r} is not an IP address; use the mount "
                "target's private IP in this host's availability zone, or leave it unset"
            )
        helper = [
            name
            for name, on in (
                ("tls", self.tls),
                ("iam", self.iam),
                ("access_point", self.access_point is not None),
            )
            if on
        ]
        if helper and self.mount_type != "efs":
            raise ConfigError(
                f"{', '.join(helper)} need(s) amazon-efs-utils: set mount_type='efs' "
                "(EFS_MOUNT_TYPE=efs) and install amazon-efs-utils, or drop them"
            )
        if (self.iam or self.access_point) and not self.tls:
            raise ConfigError(
                "iam and access_point require tls (amazon-efs-utils refuses them without it); "
                "set tls=True (EFS_TLS=true)"
            )
        for option in self.extra_options:
            key = option_key(option)
            if key == "nfsvers":
                raise ConfigError(
                    f"extra option {option!r} sets the NFS version; use nfs_version= "
                    "(EFS_NFS_VERSION) instead"
                )
            if key in _HELPER_KEYS:
                raise ConfigError(
                    f"extra option {option!r} is an amazon-efs-utils option; use the tls=, "
                    "iam=, access_point= or mount_target_ip= settings instead"
                )

    # --- derived values -----------------------------------------------------------------

    @property
    def file_system_id(self) -> str | None:
        """``fs-...`` when ``efs_dns_name`` is an EFS DNS name, else None."""
        match = _EFS_DNS.match(self.efs_dns_name)
        return match.group("fs") if match else None

    @property
    def region(self) -> str | None:
        """The AWS region in ``efs_dns_name``, or None."""
        match = _EFS_DNS.match(self.efs_dns_name)
        return match.group("region") if match else None

    @property
    def server(self) -> str:
        """The NFS server host: the mount target IP when given, else the DNS name."""
        return self.mount_target_ip or self.efs_dns_name

    @property
    def device(self) -> str:
        """What mount(8) is given as the source: ``host:/export`` (``fs-id:/export`` for efs)."""
        efs_host = self.file_system_id or self.efs_dns_name
        host = efs_host if self.mount_type == "efs" else self.server
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        return f"{host}:{self.export_path}"

    @property
    def option_warnings(self) -> tuple[str, ...]:
        """Every warning this config raised when it was built (also emitted as
        :class:`MountOptionWarning`)."""
        return self._warnings

    def nfs_options(self) -> list[str]:
        """The kernel NFS options: the recommended ones with this config's version and the
        overrides applied. No duplicates, no ``intr``."""
        base = [
            f"nfsvers={self.nfs_version}" if option_key(o) == "nfsvers" else o
            for o in RECOMMENDED_OPTIONS
        ]
        return merge_options(base, self.extra_options)

    def get_mount_options(self) -> list[str]:
        """The ``-o`` list for mount(8): :meth:`nfs_options`, plus the amazon-efs-utils options
        (``tls``, ``iam``, ``accesspoint=``, ``mounttargetip=``) when ``mount_type='efs'``."""
        options = self.nfs_options()
        if self.mount_type == "efs":
            if self.tls:
                options.append("tls")
            if self.iam:
                options.append("iam")
            if self.access_point:
                options.append(f"accesspoint={self.access_point}")
            if self.mount_target_ip:
                options.append(f"mounttargetip={self.mount_target_ip}")
        return options

    def mount_argv(self, mount_binary: str = "mount") -> list[str]:
        """The exact argument vector :class:`EFSMountManager` runs."""
        return [
            mount_binary,
            "-t",
            self.mount_type,
            "-o",
            ",".join(self.get_mount_options()),
            self.device,
            self.mount_path,
        ]

    def mount_command(self, mount_binary: str = "mount") -> str:
        """:meth:`mount_argv` as one shell-quoted line, to print or paste."""
        return shlex.join(self.mount_argv(mount_binary))

    def fstab_line(self) -> str:
        """An ``/etc/fstab`` line for this mount, with ``_netdev,nofail`` (boot does not wait
        for, or fail on, an unreachable EFS). Spaces in paths are escaped as ``\\040``."""
        options = merge_options(self.get_mount_options(), FSTAB_EXTRA_OPTIONS)
        return " ".join(
            [
                _fstab_escape(self.device),
                _fstab_escape(self.mount_path),
                self.mount_type,
                ",".join(options),
                "0",
                "0",
            ]
        )

    def compose_driver_opts(self, addr: str | None = None) -> dict[str, str]:
        """The ``driver_opts`` of a Docker Compose volume (local driver) for this mount.

        Docker passes ``o`` straight to mount(2), so only kernel NFS options appear (no
        ``_netdev``/``nofail``); ``addr`` defaults to :attr:`server` and may be a placeholder
        such as ``"${EFS_DNS_NAME}"`` for a compose file. amazon-efs-utils options (tls, iam,
        access points) cannot be expressed here and raise :class:`ConfigError`.
        """
        if self.tls or self.iam or self.access_point:
            raise ConfigError(
                "Docker's local volume driver mounts NFS itself and cannot do tls, iam or "
                "access points; mount EFS on the host with amazon-efs-utils and bind-mount "
                "it, or drop those options for the compose volume"
            )
        address = self.server if addr is None else addr
        if not address or "," in address or any(c.isspace() for c in address):
            raise ConfigError(f"addr {address!r} cannot go into a compose 'o' option string")
        options = [o for o in self.nfs_options() if o.split("=", 1)[0] not in USERSPACE_OPTIONS]
        return {
            "type": "nfs",
            "o": ",".join([f"addr={address}", *options]),
            "device": f":{self.export_path}",
        }

    def describe(self) -> dict[str, Any]:
        """Everything about this mount as plain JSON values (for ``--json`` output)."""
        return {
            "efs_dns_name": self.efs_dns_name,
            "file_system_id": self.file_system_id,
            "mount_path": self.mount_path,
            "mount_type": self.mount_type,
            "device": self.device,
            "nfs_version": self.nfs_version,
            "performance_mode": self.performance_mode,
            "throughput_mode": self.throughput_mode,
            "options": self.get_mount_options(),
            "warnings": list(self.option_warnings),
        }

    @classmethod
    def from_settings(cls, settings: Settings) -> EFSMountConfig:
        """Build from :class:`~efsray.config.Settings` (``EFS_DNS_NAME``, ``EFS_MOUNT_PATH`` and
        the ``EFS_*`` mount variables). Raises :class:`ConfigError` naming what to set."""
        if not settings.efs_dns_name:
            raise ConfigError(
                "EFS_DNS_NAME is not set; set it to the file system's DNS name "
                "(fs-0123456789abcdef0.efs.REGION.amazonaws.com) in the environment or --env-file"
            )
        ip = settings.efs_mount_target_ip
        try:
            return cls(
                settings.efs_dns_name,
                str(settings.efs_mount_path),
                settings.efs_nfs_version,
                settings.efs_performance_mode,
                settings.efs_throughput_mode,
                mount_type=settings.efs_mount_type,
                export_path=settings.efs_export_path,
                extra_options=tuple(split_options(settings.efs_mount_options or "")),
                tls=settings.efs_tls,
                iam=settings.efs_iam,
                access_point=settings.efs_access_point,
                mount_target_ip=str(ip) if ip is not None else None,
            )
        except ConfigError as exc:
            raise ConfigError(f"invalid EFS mount settings (EFS_* variables): {exc}") from None


def _check_mount_path(value: object) -> str:
    try:
        path = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        raise ConfigError(f"mount_path {value!r} is not a path") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path or "\0" in path or "\n" in path:
        raise ConfigError(f"mount_path {path!r} is empty or contains NUL/newline characters")
    # Pure string work: never stat a path that may be a hung mount.
    return os.path.abspath(path)


def _check_export_path(value: object) -> str:
    path = str(value)
    if (
        not path.startswith("/")
        or "\0" in path
        or "," in path
        or any(c.isspace() for c in path)
        or ".." in path.split("/")
    ):
        raise ConfigError(
            f"export_path {path!r} must be an absolute path inside the file system without "
            "'..', commas or spaces, e.g. '/' or '/models'"
        )
    normalized = "/" + "/".join(p for p in path.split("/") if p and p != ".")
    return normalized


def _check_option(option: str) -> None:
    if not _OPTION.match(option):
        raise ConfigError(
            f"mount option {option!r} is malformed; options are NAME or NAME=VALUE with no "
            "commas or spaces, e.g. 'timeo=300' or 'noatime'"
        )


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _fstab_escape(text: str) -> str:
    out = []
    for char in text:
        if char in " \t\n\\#":
            out.append(f"\\{ord(char):03o}")
        else:
            out.append(char)
    return "".join(out)
