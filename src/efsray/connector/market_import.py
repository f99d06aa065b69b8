"""Market data import, database -> store: the watermark kept in the store, the query plan
(one query, or one per long series), the Arrow transfer, and appending only new or changed
bars. The protocol is described in :mod:`efsray.connector.market`."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from efsray.connector.pool import Database
from efsray.errors import InvalidDataError, InvalidNameError, NotFoundError
from efsray.store.bars import CORE_COLUMNS, normalize_bars
from efsray.store.names import validate_name
from efsray.store.nfs import atomic_write, ensure_dir, read_bytes

if TYPE_CHECKING:
    from efsray.store import Store
from efsray.connector.market_types import ImportReport, SeriesResult, database_id

log = logging.getLogger("efsray.connector")

_VALUES = ("open", "high", "low", "close", "volume")
_SELECT = "SELECT symbol, timeframe, ts AS timestamp, open, high, low, close, volume"

# --- import: database -> store ----------------------------------------------------------------


class _Watermark:
    """The import watermark of one (database, selection), kept in the store."""

    def __init__(self, store: Store, db_id: str, selection: str) -> None:
        key = hashlib.sha256(selection.encode()).hexdigest()[:12]
        self.dir = store.layout.market_data / "sync"
        self.path = self.dir / f"neon-{db_id}-{key}.json"
        self.selection = selection
        self.db_id = db_id

    def read(self) -> int:
        try:
            data = json.loads(read_bytes(self.path))
            return int(data["watermark"])
        except FileNotFoundError:
            return 0
        except (ValueError, KeyError, TypeError):
            log.warning("import watermark %s is damaged; importing from the start", self.path)
            return 0

    def write(self, watermark: int, rows: int) -> None:
        ensure_dir(self.dir)
        payload = {
            "database_id": self.db_id,
            "selection": self.selection,
            "watermark": watermark,
            "rows_last_import": rows,
            "updated_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        atomic_write(self.path, json.dumps(payload, indent=2).encode() + b"\n")


def _sql_literal_list(names: Sequence[str]) -> str:
    # Names passed validate_name (letters, digits, . _ - ^ = + @): no quote can appear.
    return ", ".join("'" + validate_name("symbol", n) + "'" for n in names)


def _arrow_batches(
    db: Database, queries: Iterable[tuple[Any, str]]
) -> Generator[tuple[Any, pa.RecordBatch]]:
    """(tag, batch) for each query's result batches, over the database's Arrow connection."""
    with db.arrow_connection() as conn:
        for tag, query in queries:
            with conn.cursor() as cur:
                cur.execute(query)
                for batch in cur.fetch_record_batch():
                    yield tag, batch


# Enumerates the (symbol, timeframe) pairs through the primary key, one index probe per
# series ("loose index scan"): milliseconds, however many rows each series has.
_SERIES = """
WITH RECURSIVE s AS (
    (SELECT symbol, timeframe FROM efsray.market_bars ORDER BY symbol, timeframe LIMIT 1)
    UNION ALL
    SELECT n.symbol, n.timeframe FROM s, LATERAL (
        SELECT m.symbol, m.timeframe FROM efsray.market_bars m
        WHERE (m.symbol, m.timeframe) > (s.symbol, s.timeframe)
        ORDER BY m.symbol, m.timeframe LIMIT 1) n
)
SELECT symbol, timeframe FROM s
"""
# A full import of series this long on average reads each series on its own, without the
# symbol and timeframe text in every row (about a quarter less to transfer and decode).
_PER_SERIES_MIN_ROWS = 20_000


def _plan_queries(
    conn: Any, since: int, where: str, symbols: Sequence[str] | None
) -> list[tuple[Any, str]]:
    """The queries of one import: one ordered query of every changed row, or (for a full
    import of long series) one query per series."""
    from psycopg import sql

    single = [
        (None, f"{_SELECT} FROM efsray.market_bars WHERE {where} ORDER BY symbol, timeframe, ts")
    ]
    if since != 0:
        return single
    row = conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = 'efsray.market_bars'::regclass"
    ).fetchone()
    estimate = float(row[0]) if row else -1.0
    series = [(str(a), str(b)) for a, b in conn.execute(_SERIES).fetchall()]
    if symbols is not None:
        wanted = set(symbols)
        series = [k for k in series if k[0] in wanted]
    if not series or estimate < _PER_SERIES_MIN_ROWS * len(series):
        return single
    queries = []
    for symbol, timeframe in series:
        query = sql.SQL(
            "SELECT ts AS timestamp, open, high, low, close, volume FROM efsray.market_bars "
            "WHERE symbol = {} AND timeframe = {} ORDER BY ts"
        ).format(sql.Literal(symbol), sql.Literal(timeframe))
        queries.append(((symbol, timeframe), query.as_string(conn)))
    return queries


def _keyed(
    stream: Iterable[tuple[Any, pa.RecordBatch]],
) -> Iterator[tuple[str, str, pa.RecordBatch]]:
    """(symbol, timeframe, bars) from either kind of query."""
    for tag, batch in stream:
        if tag is not None:
            yield tag[0], tag[1], batch
            continue
        for symbol, timeframe, a, b in _runs(batch):
            yield symbol, timeframe, batch.slice(a, b - a)


def _runs(batch: pa.RecordBatch) -> Iterator[tuple[str, str, int, int]]:
    """(symbol, timeframe, start, stop) of each run of equal keys in a sorted batch."""
    n = batch.num_rows
    if n == 0:
        return
    sym, tf = batch.column(0), batch.column(1)
    if n > 1:
        change = pc.or_(
            pc.not_equal(sym.slice(1), sym.slice(0, n - 1)),
            pc.not_equal(tf.slice(1), tf.slice(0, n - 1)),
        )
        cuts = (np.flatnonzero(change.to_numpy(zero_copy_only=False)) + 1).tolist()
    else:
        cuts = []
    starts = [0, *cuts]
    stops = [*cuts, n]
    for a, b in zip(starts, stops, strict=True):
        yield str(sym[a].as_py()), str(tf[a].as_py()), a, b


def _changed_rows(store: Store, symbol: str, timeframe: str, bars: pa.Table) -> pa.Table:
    """The bars of ``bars`` that the store does not hold with exactly these values."""
    try:
        info = store.market.info(symbol, timeframe)
    except NotFoundError:
        return bars
    if info.end is None:
        return bars
    ts = bars.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
    end_ns = int(info.end.timestamp()) * 1_000_000_000 + info.end.microsecond * 1000 + 999
    overlap = ts <= end_ns
    if not bool(overlap.any()):
        return bars
    lo, hi = int(ts[overlap].min()), int(ts[overlap].max())
    stored = store.market.read(symbol, timeframe, start=lo, end=hi, columns=list(CORE_COLUMNS))
    s_ts = stored.column("timestamp").combine_chunks().cast(pa.int64()).to_numpy()
    keep = np.ones(len(ts), dtype=bool)
    if len(s_ts):
        idx = np.minimum(np.searchsorted(s_ts, ts), len(s_ts) - 1)
        same = s_ts[idx] == ts
        for name in _VALUES:
            new = bars.column(name).combine_chunks().to_numpy()
            old = stored.column(name).combine_chunks().to_numpy(zero_copy_only=False)[idx]
            same &= new == old
        keep = ~same
    if bool(keep.all()):
        return bars
    return bars.filter(pa.array(keep))


def import_market_data(
    db: Database,
    store: Store,
    *,
    symbols: Sequence[str] | None = None,
    flush_rows: int = 2_000_000,
    should_stop: Callable[[], bool] = lambda: False,
) -> ImportReport:
    """Bring the store up to date with ``efsray.market_bars`` (all symbols, or ``symbols``).

    Bars that fail validation reject their series' chunk (reported in ``rejected``; fix the
    rows in the database and the next import takes them, since updating them changes their
    txid). The watermark moves only after every accepted series is committed.
    ``should_stop`` is checked between series: when it says so, the import ends early
    without moving the watermark (the next run picks up from there; nothing is lost).
    """
    start = time.perf_counter()
    selection = "*" if symbols is None else ",".join(sorted(set(symbols)))
    with db.connection() as conn:
        db_id = database_id(conn)
        row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text").fetchone()
        assert row is not None
        horizon = int(row[0])
    mark = _Watermark(store, db_id, selection)
    since = mark.read()
    where = f"txid >= '{int(since)}'::xid8"
    if symbols is not None:
        if not symbols:
            return ImportReport(0, 0, since, since, 0.0)
        where += f" AND symbol IN ({_sql_literal_list(sorted(set(symbols)))})"
    with db.connection() as conn:  # the usual case, nothing new: one index probe, no transfer
        # ``where`` holds an integer and validated names only (see _sql_literal_list).
        probe = f"SELECT EXISTS (SELECT 1 FROM efsray.market_bars WHERE {where})"  # noqa: S608
        row = conn.execute(probe)
        anything = bool(row.fetchone()[0])  # type: ignore[index]
    if not anything:
        if horizon != since:
            mark.write(horizon, 0)
        return ImportReport(0, 0, since, horizon, round(time.perf_counter() - start, 6))
    with db.connection() as conn:
        queries = _plan_queries(conn, since, where, symbols)
    results: list[SeriesResult] = []
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    key: tuple[str, str] | None = None
    # One series is written to the store by a worker thread while the next one streams in
    # from the database (both mostly release the GIL). At most one write is in flight.
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="efsray-import")
    in_flight: Future[SeriesResult] | None = None
    stopped = False
    stream = _arrow_batches(db, queries)

    def flush() -> None:
        nonlocal pending, pending_rows, in_flight
        if key is not None and pending:
            if in_flight is not None:
                results.append(in_flight.result())
            in_flight = writer.submit(_import_series, store, key[0], key[1], pending)
        pending, pending_rows = [], 0

    try:
        for symbol, timeframe, batch in _keyed(stream):
            if (symbol, timeframe) != key:
                flush()
                if should_stop():
                    stopped = True
                    break
                key = (symbol, timeframe)
            pending.append(batch)
            pending_rows += batch.num_rows
            if pending_rows >= flush_rows:
                flush()
        if not stopped:
            flush()
        if in_flight is not None:
            results.append(in_flight.result())
    finally:
        stream.close()  # ends the query and closes its connection, also when stopped early
        writer.shutdown(wait=True)  # never leave a write running behind our back
    merged = _merge_results(results)
    read = sum(r.rows_read for r in merged)
    if stopped:
        log.info(
            "import stopped early after %d series; the watermark stays at %d", len(merged), since
        )
        horizon = since
    else:
        mark.write(horizon, read)
    return ImportReport(
        rows_read=read,
        rows_written=sum(r.rows_written for r in merged),
        watermark_before=since,
        watermark_after=horizon,
        seconds=round(time.perf_counter() - start, 6),
        series=tuple(merged),
    )


def _import_series(
    store: Store, symbol: str, timeframe: str, batches: list[pa.RecordBatch]
) -> SeriesResult:
    rows = sum(b.num_rows for b in batches)
    try:
        validate_name("symbol", symbol)
        validate_name("timeframe", timeframe)
        table = pa.Table.from_batches(batches)
        table = table.drop_columns([c for c in ("symbol", "timeframe") if c in table.schema.names])
        bars = normalize_bars(table)
    except (InvalidNameError, InvalidDataError) as exc:
        log.error("rejected %d bars of %s/%s from the database: %s", rows, symbol, timeframe, exc)
        return SeriesResult(symbol, timeframe, rows, 0, None, str(exc))
    new = _changed_rows(store, symbol, timeframe, bars)
    if new.num_rows == 0:
        return SeriesResult(symbol, timeframe, rows, 0, None)
    info = store.market.append(symbol, timeframe, new)
    log.info(
        "imported %d new bars of %s/%s (version %d)", new.num_rows, symbol, timeframe, info.version
    )
    return SeriesResult(symbol, timeframe, rows, new.num_rows, info.version)


def _merge_results(results: Iterable[SeriesResult]) -> list[SeriesResult]:
    """One result per series (a big series is imported in several flushes)."""
    out: dict[tuple[str, str], SeriesResult] = {}
    for r in results:
        prev = out.get((r.symbol, r.timeframe))
        if prev is None:
            out[(r.symbol, r.timeframe)] = r
        else:
            out[(r.symbol, r.timeframe)] = SeriesResult(
                r.symbol,
                r.timeframe,
                prev.rows_read + r.rows_read,
                prev.rows_written + r.rows_written,
                r.version if r.version is not None else prev.version,
                "; ".join(e for e in (prev.error, r.error) if e) or None,
            )
    return list(out.values())
