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

import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as ds

from efsray.errors import ConfigError, InvalidDataError

if TYPE_CHECKING:
    from efsray.store import Store

__all__ = ["MARKET_CALL", "market_dataset", "query"]

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
    try:
        parts = [ds.dataset(paths, format=fmt) for fmt, paths in by_format.items()]
    except FileNotFoundError:
        return ds.dataset(store.market.read(symbol, timeframe, version=version))
    if not parts:
        return ds.dataset([], schema=pa.schema([("timestamp", pa.timestamp("ns", tz="UTC"))]))
    schema = pa.unify_schemas([part.schema for part in parts])
    parts = [ds.dataset(part.files, format=part.format, schema=schema) for part in parts]
    return parts[0] if len(parts) == 1 else ds.dataset(parts)


def query(store: Store, sql: str, *, connection: Any = None) -> pa.Table:
    """Run ``sql`` in DuckDB with every ``market('SYM', 'TF'[, VERSION])`` as a table."""
    try:
        import duckdb
    except ImportError:
        raise ConfigError(
            "SQL needs DuckDB: pip install 'efsray[sql]' (or pip install duckdb)"
        ) from None
    con = connection if connection is not None else duckdb.connect()
    names: dict[tuple[str, str, int | None], str] = {}

    def register(match: re.Match[str]) -> str:
        symbol, timeframe, version = match.group(1), match.group(2), match.group(3)
        key = (symbol, timeframe, int(version) if version else None)
        if key not in names:
            names[key] = f"__efsray_market_{len(names)}"
            con.register(names[key], market_dataset(store, *key))
        return names[key]

    rewritten = MARKET_CALL.sub(register, sql)
    try:
        relation = con.sql(rewritten)
    except duckdb.Error as exc:
        raise InvalidDataError(f"SQL failed: {str(exc).splitlines()[0]}") from None
    if relation is None:  # a statement without a result (SET, CREATE ...)
        return pa.table({})
    to_table = getattr(relation, "to_arrow_table", None) or relation.fetch_arrow_table
    table: pa.Table = to_table()
    return table
