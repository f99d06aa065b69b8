"""Market data between the database and the store: the reports an import or export returns
(SeriesResult, ImportReport, ExportReport) and the stable ids of the two ends (store_id,
database_id). The protocol is described in :mod:`efsray.connector.market`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from efsray.errors import DatabaseError
from efsray.store.nfs import read_bytes

if TYPE_CHECKING:
    from efsray.store import Store

_SELECT = "SELECT symbol, timeframe, ts AS timestamp, open, high, low, close, volume"


@dataclass(frozen=True, slots=True)
class SeriesResult:
    """What a sync did to one series."""

    symbol: str
    timeframe: str
    rows_read: int
    rows_written: int
    version: int | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """One database -> store import."""

    rows_read: int
    rows_written: int
    watermark_before: int
    watermark_after: int
    seconds: float
    series: tuple[SeriesResult, ...] = field(default=())

    @property
    def rejected(self) -> tuple[SeriesResult, ...]:
        return tuple(s for s in self.series if s.error)


@dataclass(frozen=True, slots=True)
class ExportReport:
    """One store -> database export."""

    rows_sent: int
    rows_changed: int
    seconds: float
    series: tuple[SeriesResult, ...] = field(default=())


# --- identities ---------------------------------------------------------------------------------


def store_id(store: Store) -> str:
    """A stable id of the store: a digest of its (immutable) format marker."""
    return hashlib.sha256(read_bytes(store.layout.marker)).hexdigest()[:24]


def database_id(conn: Any) -> str:
    """The database's id from ``efsray.instance``; DatabaseError if not migrated."""
    row = conn.execute("SELECT to_regclass('efsray.instance') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise DatabaseError("the database has no efsray schema yet; run `efsray db migrate` first")
    got = conn.execute("SELECT id::text FROM efsray.instance").fetchone()
    assert got is not None
    return str(got[0])
