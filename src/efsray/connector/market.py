"""Market data between the database (``efsray.market_bars``) and the store.

**Import (database -> store).** Every row carries ``txid``, the transaction that last wrote
it. An import first takes ``X = pg_snapshot_xmin(pg_current_snapshot())`` (every
transaction below X has ended), then reads, through an Arrow transfer (ADBC: COPY binary
straight into Arrow buffers), every row with ``txid >= W``, W being the previous run's X, in
(symbol, timeframe, ts) order. Rows are validated with
:func:`~efsray.store.bars.normalize_bars` like any ingest, compared with what the store
holds, and only new or changed bars are appended. The watermark X is written to the store
(``market_data/sync/neon-<database id>-<selection>.json``) only after every series is
committed. So a second run finds nothing to do and commits nothing, and a run killed midway
re-reads from the old watermark: bars already appended compare equal and are skipped,
leaving exactly one copy. A row committed late by a long transaction has txid >= X and is
read next time: nothing is skipped. A full import of long series reads each series on its
own (listed by a loose index scan), which spares the key text in every row.

**Export (store -> database).** Per series, in one transaction under an advisory lock: the
bars are sent with COPY FROM STDIN (binary, built by numpy) into a temporary staging table,
then ``INSERT ... ON CONFLICT DO UPDATE ... WHERE IS DISTINCT FROM`` (unchanged rows are not
touched, so re-exports change nothing), and the exported store version is recorded in
``efsray.sync_state`` in the same transaction. When the database holds nothing for the
series yet, the COPY goes straight into ``market_bars``. Only bars appended since the last
exported version are sent when the store's history shows appends alone; after a
``write`` (replace) the whole series is sent and bars the store no longer has are deleted.
"""

from __future__ import annotations

from efsray.connector.market_export import export_market_data, export_series
from efsray.connector.market_import import _plan_queries as _plan_queries
from efsray.connector.market_import import import_market_data
from efsray.connector.market_types import (
    ExportReport,
    ImportReport,
    SeriesResult,
    database_id,
    store_id,
)

__all__ = [
    "ExportReport",
    "ImportReport",
    "SeriesResult",
    "database_id",
    "export_market_data",
    "import_market_data",
    "store_id",
]
# The code is in market_types (reports, ids), market_import and market_export.
__all__ += ["export_series"]
