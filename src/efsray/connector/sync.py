"""One sync cycle between the store and the database, both ways.

Order: market data database -> store (import), then store -> database for the chosen
symbols (export), then backtest runs and the checkpoint catalog (store -> database). Every
step is idempotent and crash-safe on its own (see :mod:`efsray.connector.market` and
:mod:`efsray.connector.catalog`), so a cycle can be cut anywhere and simply run again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from efsray.connector.catalog import (
    CatalogReport,
    CheckpointSource,
    RunSource,
    sync_checkpoints,
    sync_runs,
)
from efsray.connector.market import (
    ExportReport,
    ImportReport,
    export_market_data,
    import_market_data,
    store_id,
)
from efsray.connector.pool import Database
from efsray.store.names import validate_name

if TYPE_CHECKING:
    from efsray.store import Store

__all__ = ["SyncReport", "Syncer", "parse_symbols", "store_sources"]

log = logging.getLogger("efsray.connector")


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What one cycle did."""

    started_at: dt.datetime
    seconds: float
    imported: ImportReport | None
    exported: ExportReport | None
    runs: CatalogReport | None
    checkpoints: CatalogReport | None

    @property
    def rows_moved(self) -> int:
        """Rows written on the other side: bars imported and exported, runs, checkpoints
        and aliases upserted, checkpoints marked removed."""
        return sum(
            (
                self.imported.rows_written if self.imported else 0,
                self.exported.rows_changed if self.exported else 0,
                self.runs.rows_changed if self.runs else 0,
                self.checkpoints.rows_changed if self.checkpoints else 0,
                self.checkpoints.aliases_changed if self.checkpoints else 0,
                self.checkpoints.removed if self.checkpoints else 0,
            )
        )

    def summary(self) -> dict[str, Any]:
        """Flat figures for the health endpoint and the CLI."""
        return {
            "started_at": self.started_at.isoformat(),
            "seconds": self.seconds,
            "rows_moved": self.rows_moved,
            "bars_imported": self.imported.rows_written if self.imported else 0,
            "bars_read_from_db": self.imported.rows_read if self.imported else 0,
            "bars_rejected": sum(s.rows_read for s in self.imported.rejected)
            if self.imported
            else 0,
            "bars_exported": self.exported.rows_changed if self.exported else 0,
            "runs_upserted": self.runs.rows_changed if self.runs else 0,
            "checkpoints_upserted": self.checkpoints.rows_changed if self.checkpoints else 0,
            "aliases_changed": self.checkpoints.aliases_changed if self.checkpoints else 0,
            "checkpoints_marked_removed": self.checkpoints.removed if self.checkpoints else 0,
            "records_rejected": len(self.runs.rejected if self.runs else ())
            + len(self.checkpoints.rejected if self.checkpoints else ()),
            "import_watermark": self.imported.watermark_after if self.imported else None,
        }


def parse_symbols(spec: str | Sequence[str] | None) -> list[str] | str:
    """'' -> [] (none), '*' -> '*' (all), 'A,B' -> ['A', 'B'] (each a valid symbol)."""
    if spec is None:
        return []
    if isinstance(spec, str):
        spec = spec.strip()
        if spec == "*":
            return "*"
        spec = [s for s in (p.strip() for p in spec.split(",")) if s]
    return [validate_name("symbol", s) for s in spec]


def store_sources(store: Store) -> tuple[RunSource | None, CheckpointSource | None]:
    """The store's backtest results and checkpoints as sync sources, where the store has
    them (stores without those parts sync market data only)."""
    from efsray.connector import sources

    return sources.run_source(store), sources.checkpoint_source(store)


class Syncer:
    """Runs sync cycles for one store and one database.

    ``export_symbols``: symbols whose series go store -> database ("*" for all, empty for
    none). ``import_symbols``: None imports every symbol of the database.
    ``runs`` / ``checkpoints``: sources for the catalog sync (None skips that part).
    """

    def __init__(
        self,
        db: Database,
        store: Store,
        *,
        export_symbols: Sequence[str] | str = (),
        import_symbols: Sequence[str] | None = None,
        runs: RunSource | None = None,
        checkpoints: CheckpointSource | None = None,
        import_market: bool = True,
    ) -> None:
        self.db = db
        self.store = store
        self.export_symbols = parse_symbols(export_symbols)
        self.import_symbols = None if import_symbols is None else parse_symbols(import_symbols)
        self.runs = runs
        self.checkpoints = checkpoints
        self.import_market = import_market
        self._store_key = store_id(store)

    def run_once(self, should_stop: Callable[[], bool] = lambda: False) -> SyncReport:
        """One cycle; ``should_stop`` is checked between steps (each step is crash-safe,
        so stopping between them loses nothing)."""
        started = dt.datetime.now(dt.UTC)
        t0 = time.perf_counter()
        imported = exported = None
        runs = checkpoints = None
        if self.import_market:
            symbols = self.import_symbols
            imported = import_market_data(
                self.db,
                self.store,
                symbols=None if symbols in (None, "*") else list(symbols),
                should_stop=should_stop,
            )
        if self.export_symbols and not should_stop():
            exported = export_market_data(
                self.db, self.store, self.export_symbols, should_stop=should_stop
            )
        if self.runs is not None and not should_stop():
            runs = sync_runs(self.db, self.runs, self._store_key)
        if self.checkpoints is not None and not should_stop():
            checkpoints = sync_checkpoints(self.db, self.checkpoints, self._store_key)
        report = SyncReport(
            started, round(time.perf_counter() - t0, 6), imported, exported, runs, checkpoints
        )
        log.info("sync cycle: %s", report.summary())
        return report
