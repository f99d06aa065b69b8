"""``Store``: one shared volume, opened at a path, with its market data (and, as they are
added, checkpoints and backtest results). Cheap to open: Ray tasks open their own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from efsray.store.layout import StoreLayout
from efsray.store.market import MarketDataStore

__all__ = ["Store"]


class Store:
    """The efsray store rooted at ``root`` (an EFS mount or any local directory).

    ``create=True`` initializes a missing or empty directory; a non-empty directory without
    the store marker is refused (``efsray init`` adopts one explicitly).
    ``market_options`` go to :class:`MarketDataStore` (merge_factor, max_segment_rows,
    auto_compact).
    """

    def __init__(self, root: str | Path, *, create: bool = True, **market_options: Any) -> None:
        self.root = Path(root)
        self.layout = StoreLayout(self.root)
        self.layout.open(create=create)
        self.market = MarketDataStore(self.layout, **market_options)

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

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"
