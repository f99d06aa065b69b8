"""Render the EFS volume block of a compose file from the one source of NFS options.

The shipped compose files contain exactly what :func:`efs_volumes` renders (a test compares
them), and the linter's NFS rules compare any file with the same options, so the options in
``efsray.mount.options`` are the only place to change them.

Docker's ``local`` volume driver mounts NFS itself: ``type: nfs`` with ``nfsvers=4.1`` in
``o`` (only ``type: nfs`` resolves a host name given in ``addr=``), and ``device: ":/path"``.

.. note:: When ``EFSMountConfig.compose_driver_opts()`` lands (mount subsystem), this module
   should delegate to it; until then it renders from ``efsray.mount.options`` directly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from efsray.config import is_hostname
from efsray.errors import ConfigError
from efsray.mount.options import RECOMMENDED_OPTIONS

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
# ("required variable EFS_DNS_NAME is missing a value"). No spaces or commas, so that it also
# fits EFSMountConfig.compose_driver_opts(addr=...).
DNS_PLACEHOLDER = "${EFS_DNS_NAME:?}"

_PLACEHOLDER = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-?])[^{}]*)?\}$")
_ROOT = re.compile(r"^/(?:[A-Za-z0-9._-]+/?)*$")


def _check_address(address: str) -> str:
    if _PLACEHOLDER.match(address) or is_hostname(address):
        return address
    raise ConfigError(
        f"EFS address {address!r} is not a host name or IP address; use the file system's DNS "
        "name (fs-0123456789abcdef0.efs.us-east-1.amazonaws.com) or a mount target IP"
    )


def _check_root(root_dir: str) -> str:
    if not _ROOT.match(root_dir) or "/../" in f"{root_dir}/" or "/./" in f"{root_dir}/":
        raise ConfigError(
            f"EFS root directory {root_dir!r} must be an absolute path of plain names "
            "(letters, digits, '.', '_', '-'), such as /efsray"
        )
    return root_dir.rstrip("/") or "/"


def nfs_options(address: str, options: Sequence[str] = RECOMMENDED_OPTIONS) -> str:
    """The ``o:`` string: ``addr=ADDRESS`` then the recommended NFS options, in order."""
    return ",".join([f"addr={_check_address(address)}", *options])


def driver_opts(address: str, device: str) -> dict[str, str]:
    """``driver_opts`` for one EFS directory (``device`` is the path on the file system)."""
    path = _check_root(device)
    return {"type": "nfs", "o": nfs_options(address), "device": f":{path}"}


def efs_volumes(address: str, root_dir: str = DEFAULT_ROOT_DIR) -> dict[str, dict[str, Any]]:
    """The top-level ``volumes:`` entries for shared data, model cache and logs."""
    root = _check_root(root_dir)
    base = "" if root == "/" else root
    return {
        name: {"driver": "local", "driver_opts": driver_opts(address, f"{base}/{sub}")}
        for name, sub in EFS_VOLUMES
    }


def render_volumes_yaml(address: str, root_dir: str = DEFAULT_ROOT_DIR) -> str:
    """The ``volumes:`` block as YAML text, ready to paste into a compose file."""
    lines = ["volumes:"]
    for name, spec in efs_volumes(address, root_dir).items():
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
