"""Market data: versioned OHLCV series, safe with many writers on many hosts.

A series (symbol, timeframe) is a directory ``market_data/ohlcv/<symbol>/<timeframe>/`` with
``segments/`` (immutable Arrow IPC or Parquet files, see :mod:`efsray.store.segments`) and a
version log (see :mod:`efsray.store.nfs`). Each committed change is a manifest listing the
segments that make up the series at that version. Segments of one manifest never overlap in
time and are listed in time order, so a range read opens only the segments it needs and
``tail(n)`` only the last one or two, whatever the length of the history.

Writes:
- ``append`` adds bars; a bar whose timestamp is already stored replaces it ("newest write
  wins"), so re-ingesting the same file is idempotent. Bars after the last stored one become a
  new segment; bars that fall inside stored segments are merged with them (those segments are
  rewritten).
- ``write`` replaces the whole series.
- ``compact`` merges small segments. ``append`` also merges as it goes (log-structured: when
  ``merge_factor`` neighbouring segments of the same size tier accumulate, they are merged),
  so reads stay fast without anyone running ``compact``.
Every write is an optimistic commit: if another writer commits first, the change is rebuilt on
top of the new version (reusing the segment files already written when they still apply).
"""

from __future__ import annotations

from efsray.store.market_reads import MarketReads, list_series
from efsray.store.market_types import CommitInfo, Output, SeriesInfo, VerifyInfo, VersionInfo
from efsray.store.market_writes import MarketWrites

__all__ = [
    "CommitInfo",
    "MarketDataStore",
    "SeriesInfo",
    "VerifyInfo",
    "VersionInfo",
    "list_series",
]
# The parts: the value objects (market_types), the read path with the store's state
# (market_reads) and the write path (market_writes).
__all__ += ["MarketReads", "MarketWrites", "Output"]


class MarketDataStore(MarketWrites):
    """Versioned OHLCV series under ``layout.ohlcv``.

    ``merge_factor`` and ``max_segment_rows`` tune the merging that follows appends (see
    docs/store.md for the factor's trade-off between appends and reads);
    ``auto_compact=False`` turns it off (then run ``compact``). ``segment_format`` is the
    format new segment files are written in: "parquet" (the default: LZ4, delta timestamps,
    byte-stream-split floats; 0.56x the bytes of "arrow" on disk and over the wire, decoded on
    read) or "arrow" (Arrow IPC, zero-copy reads, for local disks where CPU costs more than
    bytes); both are read whatever the setting (docs/store.md has the measurements).
    ``segment_cache_bytes`` bounds the verified segment bytes kept for repeated reads (0: none;
    see :class:`~efsray.store.blocks.SegmentCache`).
    """
