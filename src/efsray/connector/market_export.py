"""Market data export, store -> database: per series, in one transaction under an advisory
lock, COPY into a staging table and an upsert that leaves unchanged rows alone, with the
exported store version recorded alongside. The protocol is described in
:mod:`efsray.connector.market`."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from efsray.connector.pgcopy import encode_bars
from efsray.connector.pool import Database
from efsray.store.bars import CORE_COLUMNS
from efsray.store.names import validate_name

if TYPE_CHECKING:
    from efsray.store import Store
from efsray.connector.market_types import ExportReport, SeriesResult, store_id

log = logging.getLogger("efsray.connector")


# --- export: store -> database -----------------------------------------------------------------


_STAGE = (
    "CREATE TEMP TABLE efsray_stage (ts timestamptz NOT NULL, open float8, high float8, "
    "low float8, close float8, volume float8) ON COMMIT DROP"
)
_UPSERT = """
INSERT INTO efsray.market_bars AS m (symbol, timeframe, ts, open, high, low, close, volume)
SELECT %s, %s, ts, open, high, low, close, volume FROM efsray_stage
ON CONFLICT (symbol, timeframe, ts) DO UPDATE
SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close,
    volume = EXCLUDED.volume
WHERE (m.open, m.high, m.low, m.close, m.volume)
      IS DISTINCT FROM (EXCLUDED.open, EXCLUDED.high, EXCLUDED.low, EXCLUDED.close,
                        EXCLUDED.volume)
"""
_MIRROR_DELETE = """
DELETE FROM efsray.market_bars m WHERE m.symbol = %s AND m.timeframe = %s
AND NOT EXISTS (SELECT 1 FROM efsray_stage s WHERE s.ts = m.ts)
"""
_COPY_CHUNK = 8 << 20


def _copy(cur: Any, statement: str, payload: bytes) -> None:
    view = memoryview(payload)
    with cur.copy(statement) as copy:
        for offset in range(0, len(view), _COPY_CHUNK):
            copy.write(view[offset : offset + _COPY_CHUNK])


def export_market_data(
    db: Database,
    store: Store,
    symbols: Iterable[str] | str,
    *,
    timeframes: Iterable[str] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ExportReport:
    """Export the store's series of ``symbols`` ("*" for all) to ``efsray.market_bars``."""
    start = time.perf_counter()
    wanted_tf = None if timeframes is None else set(timeframes)
    if isinstance(symbols, str):
        wanted = None if symbols == "*" else {validate_name("symbol", symbols)}
    else:
        wanted = {validate_name("symbol", s) for s in symbols}
    sid = store_id(store)
    results = []
    for symbol, timeframe in store.market.list_series():
        if wanted is not None and symbol not in wanted:
            continue
        if wanted_tf is not None and timeframe not in wanted_tf:
            continue
        if should_stop():
            break  # each series is its own transaction: stopping between them is safe
        results.append(export_series(db, store, symbol, timeframe, store_key=sid))
    return ExportReport(
        rows_sent=sum(r.rows_read for r in results),
        rows_changed=sum(r.rows_written for r in results),
        seconds=round(time.perf_counter() - start, 6),
        series=tuple(results),
    )


def _plan(
    store: Store, symbol: str, timeframe: str, position: dict[str, Any] | None, version: int
) -> tuple[int | None, bool]:
    """(start_ns or None for everything, mirror) for exporting up to ``version``."""
    if not position:
        return None, False
    since = int(position["version"])
    if since > version:  # the store was replaced by another one with the same marker?
        return None, True
    history = store.market.history(symbol, timeframe, limit=version - since)
    newer = [h for h in history if h.version > since]
    if len(newer) != version - since:
        return None, False  # retention removed versions in between: send everything
    if any(h.operation == "write" for h in newer):
        return None, True
    if all(h.operation in ("append", "compact") for h in newer) and not any(
        h.rows_replaced for h in newer
    ):
        return int(position["ts_max"]) + 1, False
    return None, False


def export_series(
    db: Database, store: Store, symbol: str, timeframe: str, *, store_key: str | None = None
) -> SeriesResult:
    """Export one series; one transaction, so a crash leaves all of it or none."""
    sid = store_key or store_id(store)
    stream = f"market:{symbol}/{timeframe}"
    with db.connection() as conn:
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"efsray.{stream}",))
        row = conn.execute(
            "SELECT position FROM efsray.sync_state WHERE store_id = %s AND stream = %s",
            (sid, stream),
        ).fetchone()
        position = row[0] if row else None
        info = store.market.info(symbol, timeframe)
        if position and int(position.get("version", 0)) == info.version:
            return SeriesResult(symbol, timeframe, 0, 0, info.version)
        start_ns, mirror = _plan(store, symbol, timeframe, position, info.version)
        bars = store.market.read(
            symbol, timeframe, start=start_ns, columns=list(CORE_COLUMNS), version=info.version
        )
        if start_ns is not None and bars.num_rows != info.rows - int((position or {})["rows"]):
            start_ns = None  # appends filled gaps inside the old range: send everything
            bars = store.market.read(
                symbol, timeframe, columns=list(CORE_COLUMNS), version=info.version
            )
        changed = _send(conn, symbol, timeframe, bars, mirror=mirror)
        ts_max = (
            int(bars.column("timestamp")[-1].cast(pa.int64()).as_py())
            if bars.num_rows
            else int((position or {}).get("ts_max", 0))
        )
        new_position = {"version": info.version, "rows": info.rows, "ts_max": ts_max}
        conn.execute(
            "INSERT INTO efsray.sync_state (store_id, stream, position) VALUES (%s, %s, %s) "
            "ON CONFLICT (store_id, stream) DO UPDATE SET position = EXCLUDED.position, "
            "updated_at = now()",
            (sid, stream, json.dumps(new_position)),
        )
    log.info(
        "exported %s/%s v%d: %d bars sent, %d changed",
        symbol,
        timeframe,
        info.version,
        bars.num_rows,
        changed,
    )
    return SeriesResult(symbol, timeframe, bars.num_rows, changed, info.version)


def _send(conn: Any, symbol: str, timeframe: str, bars: pa.Table, *, mirror: bool) -> int:
    """Upsert ``bars`` into market_bars; returns rows inserted, updated or deleted."""
    if bars.num_rows == 0 and not mirror:
        return 0
    empty = (
        not mirror
        and (
            conn.execute(
                "SELECT NOT EXISTS (SELECT 1 FROM efsray.market_bars "
                "WHERE symbol = %s AND timeframe = %s)",
                (symbol, timeframe),
            ).fetchone()[0]
        )
    )
    cur = conn.cursor()
    if empty:
        # Nothing stored for this series: straight into the table (the advisory lock keeps
        # other efsray exporters out; a foreign writer racing us fails the PK, and we retry
        # through the staging table).
        import psycopg

        try:
            with conn.transaction():
                _copy(
                    cur,
                    "COPY efsray.market_bars (symbol, timeframe, ts, open, high, low, close, "
                    "volume) FROM STDIN (FORMAT BINARY)",
                    encode_bars(bars, (symbol, timeframe)),
                )
            return bars.num_rows
        except psycopg.errors.UniqueViolation:
            log.info("rows of %s/%s appeared meanwhile; upserting instead", symbol, timeframe)
    cur.execute(_STAGE)
    _copy(cur, "COPY efsray_stage FROM STDIN (FORMAT BINARY)", encode_bars(bars))
    cur.execute(_UPSERT, (symbol, timeframe))
    changed = max(cur.rowcount, 0)
    if mirror:
        cur.execute(_MIRROR_DELETE, (symbol, timeframe))
        changed += max(cur.rowcount, 0)
    cur.execute("DROP TABLE efsray_stage")
    return changed
