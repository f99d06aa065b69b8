"""The store's backtest results and checkpoints as catalog sync sources.

Adapters from the store's ``results`` (:class:`~efsray.store.results.ResultStore`) and
``checkpoints`` (:class:`~efsray.store.checkpoints.CheckpointStore`) to the interfaces of
:mod:`efsray.connector.catalog`. A store without those parts yields None (market data only).

Paths in the database are relative to the store root, since every host mounts the shared
volume at its own path.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efsray.connector.catalog import CheckpointRecord, CheckpointSource, RunRecord, RunSource
from efsray.errors import CorruptionError, NotFoundError

if TYPE_CHECKING:
    from efsray.store import Store

__all__ = ["StoreCheckpoints", "StoreRuns", "checkpoint_source", "run_source"]

log = logging.getLogger("efsray.connector")


def _relative(root: Path, path: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


class StoreRuns:
    """The store's backtest runs as a :class:`RunSource`."""

    def __init__(self, results: Any, root: Path) -> None:
        self.results = results
        self.root = root

    def iter_runs(self, since: dt.datetime | None) -> Iterator[RunRecord]:
        """Runs created at or after ``since``: the results table's segments whose recorded
        time range reaches ``since`` are read (with the time filter pushed down), and
        legacy runs found by listing."""
        for info in self.results.iter_infos(since=since):
            yield RunRecord(
                run_id=info.run_id,
                strategy_id=info.strategy,
                created_at=info.created_at,
                parameters=info.params,
                metrics=info.metrics,
                market_data_versions=info.data_versions,
                store_path=_relative(self.root, info.path),
            )


class StoreCheckpoints:
    """The store's checkpoint catalog as a :class:`CheckpointSource`.

    The checkpoint store keeps no time index, so every version's manifest is read and those
    older than ``since`` are dropped here; the catalog is small next to the bytes it lists.
    """

    def __init__(self, checkpoints: Any, root: Path) -> None:
        self.checkpoints = checkpoints
        self.root = root

    def iter_checkpoints(self, since: dt.datetime | None) -> Iterator[CheckpointRecord]:
        for model in self.checkpoints.models():
            try:
                versions = self.checkpoints.list(model)
            except (NotFoundError, CorruptionError) as exc:
                log.warning("skipping checkpoints of %s: %s", model, exc)
                continue
            for info in versions:
                created = dt.datetime.fromisoformat(info.committed_at)
                if since is not None and created < since:
                    continue
                digest = hashlib.sha256()
                for f in sorted(info.files, key=lambda f: f.path):
                    digest.update(f"{f.path}\0{f.bytes}\0{f.digest}\n".encode())
                yield CheckpointRecord(
                    model_id=info.model,
                    version=int(info.version),
                    created_at=created,
                    metadata=info.metadata,
                    size_bytes=int(info.bytes),
                    checksum="sha256:" + digest.hexdigest(),
                    store_path=_relative(self.root, info.directory),
                )

    def iter_versions(self) -> Iterator[tuple[str, int]]:
        for model in self.checkpoints.models():
            for info in self.checkpoints.list(model):
                yield model, int(info.version)

    def iter_aliases(self) -> Iterator[tuple[str, str, int]]:
        for model in self.checkpoints.models():
            for alias, version in sorted(self.checkpoints.aliases(model).items()):
                yield model, alias, int(version)


def run_source(store: Store) -> RunSource | None:
    """The store's backtest runs, or None if this store has no results part."""
    results = getattr(store, "results", None)
    if results is None:
        log.info("store %s has no results part: backtest runs are not synced", store.root)
        return None
    return StoreRuns(results, Path(store.root))


def checkpoint_source(store: Store) -> CheckpointSource | None:
    """The store's checkpoint catalog, or None if this store has no checkpoints part."""
    checkpoints = getattr(store, "checkpoints", None)
    if checkpoints is None:
        log.info("store %s has no checkpoints part: the catalog is not synced", store.root)
        return None
    return StoreCheckpoints(checkpoints, Path(store.root))
