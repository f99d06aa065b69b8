"""Market data: the value objects that :class:`efsray.store.market.MarketDataStore` returns
(CommitInfo, VersionInfo, SeriesInfo, VerifyInfo) and the output formats of a read."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

Output = Literal["arrow", "pandas", "polars"]


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """What a committed write produced."""

    symbol: str
    timeframe: str
    version: int
    operation: str
    rows: int
    rows_written: int
    rows_replaced: int
    segments: int
    committed_at: str
    manifest: str


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One entry of a series' history."""

    version: int
    operation: str
    committed_at: str
    rows: int
    rows_written: int
    rows_replaced: int
    segments: int
    writer: str


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """A series at one version."""

    symbol: str
    timeframe: str
    version: int
    rows: int
    start: dt.datetime | None
    end: dt.datetime | None
    segments: int
    bytes: int
    columns: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifyInfo:
    """What :meth:`MarketDataStore.verify` checked of one version (a damaged byte raises)."""

    symbol: str
    timeframe: str
    version: int
    segments: int
    bytes: int
    manifest_checksummed: bool
    segments_without_checksums: int  # written before checksums: checked by size and decoding

    @property
    def fully_checksummed(self) -> bool:
        return self.manifest_checksummed and self.segments_without_checksums == 0
