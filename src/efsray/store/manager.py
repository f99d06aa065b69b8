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
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efsray.errors import InvalidDataError, NotFoundError
from efsray.store.retention import CleanupReport
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

    # --- checkpoints, results, retention (the plan's second half) ---------------------------

    async def save_model_checkpoint(
        self, model_id: str, checkpoint_data: bytes, metadata: dict[str, Any] | None = None
    ) -> str:
        """Save opaque checkpoint bytes as the next version of ``model_id``.

        As in the plan, ``saved_at`` (seconds since the epoch) and ``checkpoint_path`` are
        stamped into ``metadata`` (the caller's dict too) and stored with it. Returns the
        stored file's path. The bytes are never unpickled.
        """
        meta = dict(metadata or {})
        saved_at = time.time()

        def save() -> str:
            # checkpoint_path is not stored: it is where the version's file is, which
            # load_model_checkpoint reports from the manifest (always current).
            meta.pop("checkpoint_path", None)
            info = self.store.checkpoints.save(
                model_id, checkpoint_data, {**meta, "saved_at": saved_at}
            )
            return info.path

        path = await asyncio.to_thread(save)
        if isinstance(metadata, dict):
            metadata["saved_at"] = saved_at
            metadata["checkpoint_path"] = path
        self.logger.info("saved checkpoint of %s to %s", model_id, path)
        return path

    async def load_model_checkpoint(self, model_id: str) -> tuple[bytes, dict[str, Any]] | None:
        """(bytes, metadata) of the latest checkpoint of ``model_id``, verified; None if the
        model has none. A damaged file raises CorruptionError: never wrong bytes."""

        def load() -> tuple[bytes, dict[str, Any]] | None:
            try:
                data, info = self.store.checkpoints.load_bytes(model_id)
            except NotFoundError:
                return None
            metadata = dict(info.metadata)
            metadata["checkpoint_path"] = info.path
            return data, metadata

        found = await asyncio.to_thread(load)
        if found is None:
            self.logger.warning("model checkpoint not found: %s", model_id)
        return found

    async def save_backtest_results(self, strategy_id: str, results: Mapping[str, Any]) -> str:
        """Store one backtest run; returns the path of the strategy's results table (the run
        is one row of it: ``store.results.load(run_id)`` reads it back).

        ``results`` is split as follows: numeric top-level values are the run's metrics;
        ``params``/``parameters`` (a dict) its parameters; ``equity_curve`` and ``trades``
        given as DataFrames/Series/Arrow tables are stored beside the row (Arrow IPC);
        ``data_versions`` the market data read; ``tags`` (a dict) its tags; everything else
        is kept as JSON.
        """
        if not isinstance(results, Mapping):
            raise InvalidDataError(f"results must be a dict, got {type(results).__name__}")
        kwargs = split_results(results)
        info = await asyncio.to_thread(lambda: self.store.results.save(strategy_id, **kwargs))
        self.logger.info("saved backtest run %s of %s", info.run_id, strategy_id)
        return info.path

    async def cleanup_old_data(self, days_to_keep: int = 7) -> CleanupReport:
        """Remove what is older than ``days_to_keep`` days and unprotected (see
        :mod:`efsray.store.retention`); returns the report (files and bytes per area)."""
        report = await asyncio.to_thread(self.store.cleanup, days_to_keep)
        self.logger.info(
            "EFS cleanup complete: %d files removed, %.2f MB freed",
            report.files, report.bytes / 1024 / 1024,
        )  # fmt: skip
        return report


def split_results(results: Mapping[str, Any]) -> dict[str, Any]:
    """Map the plan's free-form results dict onto :meth:`ResultStore.save` arguments."""
    metrics: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    out: dict[str, Any] = {}
    for key, value in results.items():
        if key in ("params", "parameters") and isinstance(value, Mapping):
            out["params"] = value
        elif key == "tags" and isinstance(value, Mapping):
            out["tags"] = value
        elif key == "data_versions":
            out["data_versions"] = value
        elif key in ("equity_curve", "trades") and _is_table(value):
            out[key] = value
        elif _is_number(value):
            metrics[str(key)] = value
        else:
            extra[str(key)] = value
    return {**out, "metrics": metrics, "extra": extra}


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    kind = getattr(getattr(value, "dtype", None), "kind", "")
    return type(value).__module__ == "numpy" and kind in "iuf" and getattr(value, "ndim", 1) == 0


def _is_table(value: Any) -> bool:
    module = type(value).__module__
    return module.startswith(("pandas", "polars", "pyarrow"))
