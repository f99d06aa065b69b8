"""The store's backtest results and checkpoints as catalog sync sources.

Adapters from the store's ``results`` and ``checkpoints`` parts to the small interfaces of
:mod:`efsray.connector.catalog`. A store without those parts yields None (market data
only).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from efsray.connector.catalog import CheckpointSource, RunSource

if TYPE_CHECKING:
    from efsray.store import Store

__all__ = ["checkpoint_source", "run_source"]

log = logging.getLogger("efsray.connector")


def run_source(store: Store) -> RunSource | None:
    """The store's backtest runs, or None if this store has no results part."""
    if getattr(store, "results", None) is None:
        log.debug("store %s has no results part: runs are not synced", store.root)
        return None
    return None


def checkpoint_source(store: Store) -> CheckpointSource | None:
    """The store's checkpoint catalog, or None if this store has no checkpoints part."""
    if getattr(store, "checkpoints", None) is None:
        log.debug("store %s has no checkpoints part: the catalog is not synced", store.root)
        return None
    return None
