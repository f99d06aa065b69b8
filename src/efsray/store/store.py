"""``Store``: one shared volume, opened at a path, with its market data, model checkpoints
and backtest results. Cheap to open: Ray tasks open their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from efsray.store.checkpoints import DEFAULT_GRACE_S, CheckpointStore
from efsray.store.layout import StoreLayout
from efsray.store.market import MarketDataStore
from efsray.store.results import ResultStore
from efsray.store.retention import CleanupReport, cleanup

__all__ = ["Store"]


class Store:
    """The efsray store rooted at ``root`` (an EFS mount or any local directory).

    ``create=True`` initializes a missing or empty directory; a non-empty directory without
    the store marker is refused (``efsray init`` adopts one explicitly).
    ``market_options`` go to :class:`MarketDataStore` (merge_factor, max_segment_rows,
    auto_compact, segment_format).
    """

    def __init__(self, root: str | Path, *, create: bool = True, **market_options: Any) -> None:
        self.root = Path(root)
        self.layout = StoreLayout(self.root)
        self.layout.open(create=create)
        self.market = MarketDataStore(self.layout, **market_options)
        self.checkpoints = CheckpointStore(self.layout)
        self.results = ResultStore(self.layout)

    @classmethod
    def open(cls, root: str | Path | None = None, *, create: bool = True, **options: Any) -> Store:
        """Open the store at ``root``, or at EFS_MOUNT_PATH from the settings."""
        if root is None:
            from efsray.config import load_settings

            root = load_settings().store_root
        return cls(root, create=create, **options)

    @classmethod
    def init(cls, root: str | Path) -> Store:
        """Create (or adopt) a store at ``root``; idempotent."""
        StoreLayout(Path(root)).init()
        return cls(root, create=False)

    def cleanup(
        self,
        days: float = 7,
        *,
        grace: float = DEFAULT_GRACE_S,
        dry_run: bool = False,
        now: float | None = None,
    ) -> CleanupReport:
        """Apply retention (see :mod:`efsray.store.retention`): remove what is older than
        ``days`` and unprotected, and crashed writers' debris older than ``grace`` seconds."""
        return cleanup(
            self.layout,
            days=days,
            grace=grace,
            dry_run=dry_run,
            now=now,
            checkpoints=self.checkpoints,
            results=self.results,
        )

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"
