"""Render the EFS volume block of a compose file with ``EFSMountConfig``.

Every ``driver_opts`` comes from :meth:`efsray.mount.EFSMountConfig.compose_driver_opts`,
which renders from ``efsray.mount.options`` — the one source of NFS options. The shipped
compose files contain exactly what :func:`efs_volumes` renders for the placeholder address (a
test compares them), and the linter's NFS rules compare any file with the same options.

Docker's ``local`` volume driver mounts NFS itself: ``type: nfs`` with ``nfsvers=4.1`` in
``o`` (only ``type: nfs`` resolves a host name given in ``addr=``), and ``device: ":/path"``.
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from efsray.errors import ConfigError

if TYPE_CHECKING:
    from efsray.mount.config import EFSMountConfig

__all__ = [
    "DEFAULT_ROOT_DIR",
    "DNS_PLACEHOLDER",
    "EFS_VOLUMES",
    "driver_opts",
    "efs_volumes",
    "nfs_options",
    "render_volumes_yaml",
]

# (compose volume name, directory under the root) — the seed's names, kept.
EFS_VOLUMES: tuple[tuple[str, str], ...] = (
    ("efs-shared-data", "data"),
    ("efs-model-cache", "models"),
    ("efs-logs", "logs"),
)

# The EFS directory the three volumes live under: the CloudFormation access point's root, so
# that a TLS mount through the access point (efs-utils) and a plain NFS volume see one tree.
DEFAULT_ROOT_DIR = "/efsray"

# What the shipped files write for the address: Compose refuses to start when it is unset
# ("required variable EFS_DNS_NAME is missing a value"). No spaces or commas: it goes into
# the `o:` option string.
DNS_PLACEHOLDER = "${EFS_DNS_NAME:?}"

_PLACEHOLDER = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?])[^{}]*)?\}$")
_ROOT = re.compile(r"^/(?:[A-Za-z0-9._-]+/?)*$")
# Stands in for the host name when the address is a ${...} placeholder: EFSMountConfig
# validates its host, and `addr=` replaces it in the output. (.invalid never resolves.)
_STAND_IN_HOST = "efs.invalid"


def _check_root(root_dir: str) -> str:
    if not _ROOT.match(root_dir) or "/../" in f"{root_dir}/" or "/./" in f"{root_dir}/":
        raise ConfigError(
            f"EFS root directory {root_dir!r} must be an absolute path of plain names "
            "(letters, digits, '.', '_', '-'), such as /efsray"
        )
    return root_dir.rstrip("/") or "/"


def _config(
    address: str | None, config: EFSMountConfig | None
) -> tuple[EFSMountConfig, str | None]:
    """The mount config to render from, and the ``addr`` override to pass it."""
    if config is not None:
        return config, address
    if address is None:
        raise ConfigError("no EFS address: pass the DNS name, an IP or a ${...} placeholder")
    from efsray.mount.config import EFSMountConfig

    if _PLACEHOLDER.match(address):
        return EFSMountConfig(_STAND_IN_HOST, "/data"), address
    return EFSMountConfig(address, "/data"), None


def driver_opts(
    address: str | None, device: str, *, config: EFSMountConfig | None = None
) -> dict[str, str]:
    """``driver_opts`` for one EFS directory (``device`` is the path on the file system).

    Without ``config`` the options are the recommended ones; with it (e.g.
    ``EFSMountConfig.from_settings(...)``) its version and overrides apply, and ``address``,
    when given, replaces its server in ``addr=``.
    """
    base, addr = _config(address, config)
    mount = dataclasses.replace(base, export_path=_check_root(device))
    return mount.compose_driver_opts(addr=addr)


def nfs_options(address: str) -> str:
    """The ``o:`` string: ``addr=ADDRESS`` then the recommended NFS options, in order."""
    return driver_opts(address, "/")["o"]


def efs_volumes(
    address: str | None = None,
    root_dir: str = DEFAULT_ROOT_DIR,
    *,
    config: EFSMountConfig | None = None,
) -> dict[str, dict[str, Any]]:
    """The top-level ``volumes:`` entries for shared data, model cache and logs."""
    root = _check_root(root_dir)
    base = "" if root == "/" else root
    return {
        name: {
            "driver": "local",
            "driver_opts": driver_opts(address, f"{base}/{sub}", config=config),
        }
        for name, sub in EFS_VOLUMES
    }


def render_volumes_yaml(volumes: dict[str, dict[str, Any]]) -> str:
    """A ``volumes:`` block (from :func:`efs_volumes`) as YAML, ready to paste."""
    lines = ["volumes:"]
    for name, spec in volumes.items():
        opts = spec["driver_opts"]
        lines += [
            f"  {name}:",
            f"    driver: {spec['driver']}",
            "    driver_opts:",
            f"      type: {opts['type']}",
            f'      o: "{opts["o"]}"',
            f'      device: "{opts["device"]}"',
        ]
    return "\n".join(lines) + "\n"
