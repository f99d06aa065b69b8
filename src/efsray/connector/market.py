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

import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from efsray.connector.pgcopy import encode_bars
from efsray.connector.pool import Database
from efsray.errors import DatabaseError, InvalidDataError, InvalidNameError, NotFoundError
from efsray.store.bars import CORE_COLUMNS, normalize_bars
from efsray.store.names import validate_name
from efsray.store.nfs import atomic_write, ensure_dir, read_bytes

if TYPE_CHECKING:
    from efsray.store import Store

__all__ = [
    "ExportReport",
    "ImportReport",
    "SeriesResult",
    "database_id",
    "export_market_data",
    "import_market_data",
    "store_id",
]

log = logging.getLogger("efsray.connector")

_VALUES = ("open", "high", "low", "close", "volume")
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
