"""Mount management: EFS mount options, mounting, the mount table, and health.

Public names are imported lazily, so that a health-probe child (which imports
``efsray.mount._probe``) starts without loading pydantic and the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from efsray.mount.availability import Availability, check_availability, resolve_host
    from efsray.mount.config import EFSMountConfig, MountOptionWarning
    from efsray.mount.drift import DriftItem, DriftReport, option_drift
    from efsray.mount.health import HEALTH_EXIT_CODES, MountHealth, check_health
    from efsray.mount.manager import EFSMountManager, LiveMount, MountResult, unmount_path
    from efsray.mount.mountinfo import (
        MountInfo,
        find_mount,
        mount_at,
        parse_mountinfo,
        parse_mountinfo_line,
        read_mountinfo,
    )

_EXPORTS: dict[str, str] = {
    "Availability": "efsray.mount.availability",
    "check_availability": "efsray.mount.availability",
    "resolve_host": "efsray.mount.availability",
    "EFSMountConfig": "efsray.mount.config",
    "MountOptionWarning": "efsray.mount.config",
    "DriftItem": "efsray.mount.drift",
    "DriftReport": "efsray.mount.drift",
    "option_drift": "efsray.mount.drift",
    "HEALTH_EXIT_CODES": "efsray.mount.health",
    "MountHealth": "efsray.mount.health",
    "check_health": "efsray.mount.health",
    "EFSMountManager": "efsray.mount.manager",
    "LiveMount": "efsray.mount.manager",
    "MountResult": "efsray.mount.manager",
    "unmount_path": "efsray.mount.manager",
    "MountInfo": "efsray.mount.mountinfo",
    "find_mount": "efsray.mount.mountinfo",
    "mount_at": "efsray.mount.mountinfo",
    "parse_mountinfo": "efsray.mount.mountinfo",
    "parse_mountinfo_line": "efsray.mount.mountinfo",
    "read_mountinfo": "efsray.mount.mountinfo",
}

__all__ = [
    "HEALTH_EXIT_CODES",
    "Availability",
    "DriftItem",
    "DriftReport",
    "EFSMountConfig",
    "EFSMountManager",
    "LiveMount",
    "MountHealth",
    "MountInfo",
    "MountOptionWarning",
    "MountResult",
    "check_availability",
    "check_health",
    "find_mount",
    "mount_at",
    "option_drift",
    "parse_mountinfo",
    "parse_mountinfo_line",
    "read_mountinfo",
    "resolve_host",
    "unmount_path",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'efsray.mount' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
