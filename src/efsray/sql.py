"""SQL over the store with DuckDB (the optional ``sql`` extra): ``market('AAPL', '1m')``.

A series is handed to DuckDB as a pyarrow dataset over exactly the files of one version
(:meth:`MarketDataStore.files`), so superseded segments are never counted, Arrow IPC segments
(which DuckDB cannot read by itself) and Parquet ones are both read, and DuckDB pushes column
projections and filters down into the scan (zero-copy for Arrow IPC)::

    from efsray.sql import query
    query(store, "SELECT max(close) FROM market('AAPL', '1m') WHERE timestamp >= '2024-01-01'")

Without DuckDB, the same dataset serves pyarrow and polars: ``market_dataset(...)``.
"""

from __future__ import annotations

import errno
import logging
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds

from efsray.errors import ConfigError, EfsrayError, InvalidDataError

if TYPE_CHECKING:
    from efsray.store import Store

__all__ = ["MARKET_CALL", "market_dataset", "query"]

log = logging.getLogger(__name__)

MARKET_CALL = re.compile(
    r"""\bmarket\(\s*'([^']+)'\s*,\s*'([^']+)'\s*(?:,\s*([0-9]+)\s*)?\)""", re.IGNORECASE
)
"""``market('SYM', 'TF')`` or ``market('SYM', 'TF', VERSION)``, with literal arguments."""

_FORMATS = {".arrow": "ipc", ".parquet": "parquet"}


def market_dataset(
    store: Store, symbol: str, timeframe: str, version: int | None = None
) -> ds.Dataset:
    """A pyarrow dataset of one version of a series: its files, one schema (a column that
    older segments lack reads as null). A version some of whose files a merge has removed
    since (an older one: docs/store.md, "Disk") is read through the store instead, which
    follows their redirects, and handed over in memory."""
    files = store.market.files(symbol, timeframe, version)
    by_format: dict[str, list[str]] = defaultdict(list)
    for path in files:
        by_format[_FORMATS[path.suffix]].append(str(path))
    if not by_format:
        return ds.dataset([], schema=pa.schema([("timestamp", pa.timestamp("ns", tz="UTC"))]))
    try:  # each step opens files: a merge may have removed them since files() listed them
        parts = [ds.dataset(paths, format=fmt) for fmt, paths in by_format.items()]
        schema = pa.unify_schemas([part.schema for part in parts])
        parts = [ds.dataset(part.files, format=part.format, schema=schema) for part in parts]
    except OSError as exc:
        if not _file_gone(exc):
            raise
        return _in_memory(store, symbol, timeframe, version)
    return parts[0] if len(parts) == 1 else ds.dataset(parts)


def _in_memory(store: Store, symbol: str, timeframe: str, version: int | None) -> ds.Dataset:
    """One version read through the store (which follows merges' redirects), in memory."""
    return ds.dataset(store.market.read(symbol, timeframe, version=version))


# A scan that found a file gone: a merge committed meanwhile and removed the inputs of the
# version the query resolved (docs/store.md, "Disk"); NFS says ESTALE for a file another
# host removed under an open handle. Such a query is run again, the last time in memory.
_GONE = ("[errno 2]", "[errno 116]", "no such file", "stale file handle")
_ATTEMPTS = 3


def _file_gone(exc: BaseException) -> bool:
    """A file removed under us: ENOENT, or ESTALE (NFS, removed by another host)."""
    if isinstance(exc, EfsrayError):  # the store's own answer (no such series, ...)
        return False
    if isinstance(exc, OSError):  # pyarrow raises FileNotFoundError(path), no errno
        return isinstance(exc, FileNotFoundError) or exc.errno == errno.ESTALE
    return any(gone in str(exc).lower() for gone in _GONE)


def query(store: Store, sql: str, *, connection: Any = None) -> pa.Table:
    """Run ``sql`` in DuckDB with every ``market('SYM', 'TF'[, VERSION])`` as a table.

    A query that races a merge (its version's files removed mid-scan) is run again, on the
    then latest version for an unpinned ``market()``; the last attempt reads each series
    through the store (which follows the merge's redirects) into memory."""
    try:
        import duckdb
    except ImportError:
        raise ConfigError(
            "SQL needs DuckDB: pip install 'efsray[sql]' (or pip install duckdb)"
        ) from None
    con = connection if connection is not None else duckdb.connect()
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            return _run(store, sql, con, in_memory=attempt == _ATTEMPTS)
        except (duckdb.Error, OSError) as exc:
            if not isinstance(exc, duckdb.Error) and not _file_gone(exc):
                raise  # the store's errors say what to do themselves
            message = f"{type(exc).__name__}: {exc}" if isinstance(exc, OSError) else str(exc)
            if attempt < _ATTEMPTS and _file_gone(exc):
                log.info("SQL scan found a file gone (a merge meanwhile); again: %s", message)
                continue
            raise InvalidDataError(f"SQL failed: {message.splitlines()[0]}") from None
    raise AssertionError("unreachable")  # pragma: no cover - the last attempt returns or raises


def _run(store: Store, sql: str, con: Any, *, in_memory: bool) -> pa.Table:
    names: dict[tuple[str, str, int | None], str] = {}

    def register(match: re.Match[str]) -> str:
        symbol, timeframe, version = match.group(1), match.group(2), match.group(3)
        key = (symbol, timeframe, int(version) if version else None)
        if key not in names:
            names[key] = f"__efsray_market_{len(names)}"
            con.register(names[key], (_in_memory if in_memory else market_dataset)(store, *key))
        return names[key]

    relation = con.sql(MARKET_CALL.sub(register, sql))
    if relation is None:  # a statement without a result (SET, CREATE ...)
        return pa.table({})
    to_table = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    table: pa.Table = to_table()
    return table
