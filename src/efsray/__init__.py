"""efsray: crash-safe, concurrency-safe shared storage for Ray clusters on AWS EFS.

The public API is re-exported here and imported lazily, so that ``import efsray`` is cheap
(health-check children and the CLI start fast) and optional dependencies (Ray, psycopg,
FUSE) are only needed by the parts that use them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # configuration and errors
    "Settings": "efsray.config",
    "load_settings": "efsray.config",
    "EfsrayError": "efsray.errors",
    # the store
    "Store": "efsray.store",
    "MarketDataStore": "efsray.store",
    "CheckpointStore": "efsray.store",
    "ResultStore": "efsray.store",
    "RetentionPolicy": "efsray.store",
    "CleanupReport": "efsray.store",
    "CommitInfo": "efsray.store",
    "EFSDataPath": "efsray.store",
    "EFSDataManager": "efsray.store",
    # mounts and monitoring
    "EFSMountConfig": "efsray.mount",
    "EFSMountManager": "efsray.mount",
    "EFSPerformanceMonitor": "efsray.monitor",
    "EFSPerformanceMetrics": "efsray.monitor",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'efsray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
