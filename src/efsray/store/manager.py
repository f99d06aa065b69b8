"""The original plan's face: ``EFSDataPath`` and ``EFSDataManager``.

Code written against the plan keeps working: same class names, method names, arguments and
return shapes. Underneath is the real store (:class:`efsray.store.Store`): atomic,
versioned, safe with concurrent writers, never pickled. The async methods run the blocking
filesystem work in a thread (``asyncio.to_thread``), so they never block the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efsray.errors import NotFoundError
from efsray.store.store import Store

__all__ = ["EFSDataManager", "EFSDataPath"]


@dataclass(frozen=True, slots=True)
class EFSDataPath:
    """The store's top-level directories, as strings (the plan's shape)."""

    base_path: str
    market_data: str
    models: str
    results: str
    logs: str

    @classmethod
    def from_mount_path(cls, mount_path: str | os.PathLike[str]) -> EFSDataPath:
        base = os.fspath(mount_path)
        return cls(
            base_path=base,
            market_data=os.path.join(base, "market_data"),
            models=os.path.join(base, "models"),
            results=os.path.join(base, "results"),
            logs=os.path.join(base, "logs"),
        )


class EFSDataManager:
    """Shared data on EFS for Ray workers, with the plan's API over the real store."""

    def __init__(self, efs_mount_path: str | os.PathLike[str], **store_options: Any) -> None:
        self.mount_path = os.fspath(efs_mount_path)
        self.paths = EFSDataPath.from_mount_path(self.mount_path)
        self.logger = logging.getLogger("efsray.store.EFSDataManager")
        self._store_options = store_options
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        """The underlying store (opened, and initialized if empty, on first use)."""
        if self._store is None:
            self._store = Store(self.mount_path, **self._store_options)
        return self._store

    async def initialize_efs_structure(self) -> None:
        """Create the directory tree and the store marker (idempotent)."""

        def init() -> None:
            self._store = Store.init(Path(self.mount_path))

        await asyncio.to_thread(init)
        self.logger.info("initialized efsray store at %s", self.mount_path)

    async def save_market_data(self, symbol: str, timeframe: str, data: Any) -> str:
        """Commit bars (DataFrame, Arrow table, list of bar dicts or dict of columns).

        Returns the committed location: the manifest file of the new version.
        """
        info = await asyncio.to_thread(self.store.market.append, symbol, timeframe, data)
        self.logger.info(
            "saved %d bars of %s/%s as version %d",
            info.rows_written,
            symbol,
            timeframe,
            info.version,
        )
        return info.manifest

    async def load_market_data(
        self, symbol: str, timeframe: str, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` bars as dicts, newest first; [] if the series does not exist."""

        def load() -> list[dict[str, Any]]:
            try:
                table = self.store.market.tail(symbol, timeframe, limit)
            except NotFoundError:
                return []
            rows: list[dict[str, Any]] = table.to_pylist()
            rows.reverse()
            return rows

        return await asyncio.to_thread(load)
