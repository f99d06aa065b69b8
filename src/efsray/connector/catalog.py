"""Backtest runs and the checkpoint catalog, store -> database.

The store is the source of truth; the database gets a queryable copy (metrics and
parameters as jsonb). The sync reads through two small interfaces, so it does not depend
on how the store lays results out:

- a :class:`RunSource` yields :class:`RunRecord` (stable ``run_id``, ``created_at``);
- a :class:`CheckpointSource` yields :class:`CheckpointRecord` (``model_id`` + ``version``,
  ``created_at``) and the current aliases.

Records that are not JSON-safe or have a naive ``created_at`` are skipped, logged and
reported (``rejected``); the rest go on. Rows are upserted in batches (``INSERT ... ON
CONFLICT DO UPDATE ... WHERE IS DISTINCT FROM``: a row that did not change is not touched,
so a second sync changes nothing). The
watermark (the newest ``created_at`` synced) is stored in ``efsray.sync_state`` after the
last batch; the next sync asks the source for records from ``watermark - lookback`` on, the
lookback covering NFS directory caching (a new file on another host can stay invisible for
up to a minute) and clock skew between hosts. A crash midway leaves the old watermark:
the re-run upserts the same rows again, which changes nothing.

Aliases are few and move: they are synced in full each time (the database's aliases of a
model become exactly the store's). Checkpoint versions that retention removed from the store
keep their row, with ``removed_at`` set (and cleared should the version reappear).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

from efsray.connector.pool import Database
from efsray.errors import InvalidDataError

__all__ = [
    "CatalogReport",
    "CheckpointRecord",
    "CheckpointSource",
    "RunRecord",
    "RunSource",
    "sync_checkpoints",
    "sync_runs",
]

log = logging.getLogger("efsray.connector")

T = TypeVar("T")
DEFAULT_LOOKBACK = dt.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One backtest run as the database stores it."""

    run_id: str
    strategy_id: str
    created_at: dt.datetime
    parameters: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    market_data_versions: Mapping[str, Any] = field(default_factory=dict)
    store_path: str | None = None


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """One checkpoint version as the catalog stores it (metadata only, never the bytes)."""

    model_id: str
    version: int
    created_at: dt.datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)
    size_bytes: int | None = None
    checksum: str | None = None
    store_path: str | None = None


@runtime_checkable
class RunSource(Protocol):
    """Where backtest runs come from (the store's results, or anything else)."""

    def iter_runs(self, since: dt.datetime | None) -> Iterable[RunRecord]:
        """Runs with ``created_at >= since`` (all if None), in any order."""
        ...


@runtime_checkable
class CheckpointSource(Protocol):
    """Where the checkpoint catalog comes from."""

    def iter_checkpoints(self, since: dt.datetime | None) -> Iterable[CheckpointRecord]:
        """Checkpoint versions with ``created_at >= since`` (all if None), in any order."""
        ...

    def iter_aliases(self) -> Iterable[tuple[str, str, int]]:
        """Every (model_id, alias, version) in force now."""
        ...

    def iter_versions(self) -> Iterable[tuple[str, int]]:
        """Every (model_id, version) the store holds now; the others are marked removed."""
        ...


@dataclass(frozen=True, slots=True)
class CatalogReport:
    """One catalog sync."""

    stream: str
    records_seen: int
    rows_changed: int
    watermark_before: dt.datetime | None
    watermark_after: dt.datetime | None
    seconds: float
    aliases_changed: int = 0
    rejected: tuple[str, ...] = ()
    removed: int = 0


def _json(value: Mapping[str, Any], what: str, key: str) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None  # jsonb has no NaN/inf
        if isinstance(v, Mapping):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, dt.datetime | dt.date):
            return v.isoformat()
        if hasattr(v, "item") and callable(v.item):  # numpy scalar
            return clean(v.item())
        return v

    try:
        return json.dumps(clean(dict(value)), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(f"{what} of {key} is not JSON-serializable: {exc}") from None


def _aware(when: dt.datetime, what: str) -> dt.datetime:
    if when.tzinfo is None:
        raise InvalidDataError(f"{what} has a naive created_at {when!r}; use a UTC datetime")
    return when


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_watermark(conn: Any, store_key: str, stream: str) -> dt.datetime | None:
    row = conn.execute(
        "SELECT position->>'watermark' FROM efsray.sync_state WHERE store_id = %s AND stream = %s",
        (store_key, stream),
    ).fetchone()
    return dt.datetime.fromisoformat(row[0]) if row and row[0] else None


def _write_watermark(conn: Any, store_key: str, stream: str, when: dt.datetime | None) -> None:
    if when is None:
        return
    conn.execute(
        "INSERT INTO efsray.sync_state (store_id, stream, position) VALUES (%s, %s, %s) "
        "ON CONFLICT (store_id, stream) DO UPDATE SET position = EXCLUDED.position, "
        "updated_at = now() "
        "WHERE (efsray.sync_state.position->>'watermark')::timestamptz "
        "< (EXCLUDED.position->>'watermark')::timestamptz",
        (store_key, stream, json.dumps({"watermark": when.isoformat()})),
    )


_UPSERT_RUN = """
INSERT INTO efsray.backtest_runs AS r
    (run_id, strategy_id, parameters, metrics, market_data_versions, created_at, store_path)
VALUES (%s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s, %s)
ON CONFLICT (run_id) DO UPDATE SET
    strategy_id = EXCLUDED.strategy_id, parameters = EXCLUDED.parameters,
    metrics = EXCLUDED.metrics, market_data_versions = EXCLUDED.market_data_versions,
    created_at = EXCLUDED.created_at, store_path = EXCLUDED.store_path, synced_at = now()
WHERE (r.strategy_id, r.parameters, r.metrics, r.market_data_versions, r.created_at,
       r.store_path)
   IS DISTINCT FROM (EXCLUDED.strategy_id, EXCLUDED.parameters, EXCLUDED.metrics,
       EXCLUDED.market_data_versions, EXCLUDED.created_at, EXCLUDED.store_path)
"""

_UPSERT_CHECKPOINT = """
INSERT INTO efsray.checkpoints AS c
    (model_id, version, created_at, metadata, size_bytes, checksum, store_path)
VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s)
ON CONFLICT (model_id, version) DO UPDATE SET
    created_at = EXCLUDED.created_at, metadata = EXCLUDED.metadata,
    size_bytes = EXCLUDED.size_bytes, checksum = EXCLUDED.checksum,
    store_path = EXCLUDED.store_path, removed_at = NULL, synced_at = now()
WHERE (c.created_at, c.metadata, c.size_bytes, c.checksum, c.store_path)
   IS DISTINCT FROM (EXCLUDED.created_at, EXCLUDED.metadata, EXCLUDED.size_bytes,
       EXCLUDED.checksum, EXCLUDED.store_path)
   OR c.removed_at IS NOT NULL
"""

_MARK_REMOVED = """
WITH present AS (SELECT * FROM unnest(%s::text[], %s::int[]) AS s(model_id, version))
UPDATE efsray.checkpoints c
SET removed_at = CASE WHEN c.removed_at IS NULL THEN now() END, synced_at = now()
WHERE (c.removed_at IS NULL) = NOT EXISTS (
    SELECT 1 FROM present s WHERE s.model_id = c.model_id AND s.version = c.version)
"""


def _run_row(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.run_id,
        r.strategy_id,
        _json(r.parameters, "parameters", r.run_id),
        _json(r.metrics, "metrics", r.run_id),
        _json(r.market_data_versions, "market_data_versions", r.run_id),
        _aware(r.created_at, f"run {r.run_id}"),
        r.store_path,
    )


def _checkpoint_row(c: CheckpointRecord) -> tuple[Any, ...]:
    key = f"{c.model_id} v{c.version}"
    return (
        c.model_id,
        int(c.version),
        _aware(c.created_at, f"checkpoint {key}"),
        _json(c.metadata, "metadata", key),
        c.size_bytes,
        c.checksum,
        c.store_path,
    )


def _sync_stream(
    db: Database,
    store_key: str,
    stream: str,
    records: Any,
    statement: str,
    to_row: Any,
    batch_size: int,
    lookback: dt.timedelta,
) -> tuple[int, int, dt.datetime | None, dt.datetime | None, tuple[str, ...]]:
    with db.connection() as conn:
        before = _read_watermark(conn, store_key, stream)
    since = None if before is None else before - lookback
    seen = changed = 0
    newest = before
    rejected: list[str] = []
    for batch in _batches(records(since), batch_size):
        rows, accepted = [], []
        for item in batch:  # validate the whole batch before sending any of it
            try:
                rows.append(to_row(item))
                accepted.append(item)
            except InvalidDataError as exc:
                # One bad record must not stop the sync of every other one forever.
                log.error("not syncing %s: %s", stream, exc)
                rejected.append(str(exc))
        if rows:
            with db.connection() as conn, conn.cursor() as cur:
                cur.executemany(statement, rows)
                changed += max(cur.rowcount, 0)
        seen += len(batch)
        if accepted:
            top = max(item.created_at for item in accepted)
            newest = top if newest is None or top > newest else newest
    if newest is not None and newest != before:
        with db.connection() as conn:
            _write_watermark(conn, store_key, stream, newest)
    return seen, changed, before, newest, tuple(rejected)


def sync_runs(
    db: Database,
    source: RunSource,
    store_key: str,
    *,
    batch_size: int = 500,
    lookback: dt.timedelta = DEFAULT_LOOKBACK,
) -> CatalogReport:
    """Upsert the source's backtest runs into ``efsray.backtest_runs``."""
    start = time.perf_counter()
    seen, changed, before, after, rejected = _sync_stream(
        db, store_key, "runs", source.iter_runs, _UPSERT_RUN, _run_row, batch_size, lookback
    )
    seconds = round(time.perf_counter() - start, 6)
    return CatalogReport("runs", seen, changed, before, after, seconds, rejected=rejected)


def sync_checkpoints(
    db: Database,
    source: CheckpointSource,
    store_key: str,
    *,
    batch_size: int = 500,
    lookback: dt.timedelta = DEFAULT_LOOKBACK,
) -> CatalogReport:
    """Upsert the checkpoint catalog and make the database's aliases the source's."""
    start = time.perf_counter()
    seen, changed, before, after, rejected = _sync_stream(
        db,
        store_key,
        "checkpoints",
        source.iter_checkpoints,
        _UPSERT_CHECKPOINT,
        _checkpoint_row,
        batch_size,
        lookback,
    )
    aliases = sorted(set(source.iter_aliases()))
    alias_changes = _sync_aliases(db, aliases)
    present = sorted(set(source.iter_versions()))
    with db.connection() as conn, conn.cursor() as cur:
        cur.execute(_MARK_REMOVED, ([m for m, _ in present], [int(v) for _, v in present]))
        removed = max(cur.rowcount, 0)
    return CatalogReport(
        "checkpoints",
        seen,
        changed,
        before,
        after,
        round(time.perf_counter() - start, 6),
        alias_changes,
        rejected,
        removed,
    )


def _sync_aliases(db: Database, aliases: Sequence[tuple[str, str, int]]) -> int:
    with db.connection() as conn, conn.cursor() as cur:
        changed = 0
        if aliases:
            cur.executemany(
                "INSERT INTO efsray.checkpoint_aliases AS a (model_id, alias, version) "
                "VALUES (%s, %s, %s) ON CONFLICT (model_id, alias) DO UPDATE "
                "SET version = EXCLUDED.version, synced_at = now() "
                "WHERE a.version IS DISTINCT FROM EXCLUDED.version",
                [(m, a, int(v)) for m, a, v in aliases],
            )
            changed += max(cur.rowcount, 0)
        # Aliases removed in the store: gone from the database too.
        cur.execute(
            "DELETE FROM efsray.checkpoint_aliases a WHERE NOT EXISTS ("
            "SELECT 1 FROM unnest(%s::text[], %s::text[]) AS s(model_id, alias) "
            "WHERE s.model_id = a.model_id AND s.alias = a.alias)",
            ([m for m, _, _ in aliases], [a for _, a, _ in aliases]),
        )
        changed += max(cur.rowcount, 0)
    return changed
