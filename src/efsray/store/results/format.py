"""The table format: a batch of runs as one Parquet segment and one sidecar.

A segment is a Parquet file (LZ4 for the columns queries decode, ZSTD for the text columns,
statistics on, a CRC-32 per page, row groups of ``ROW_GROUP_ROWS``), one row per run, sorted
by run id, with the columns:

- ``run_id`` (string), ``created_at`` (timestamp[ms, UTC], the run id's time), ``writer``;
- ``metrics.<name>`` (float64, null where a run lacks the metric): what filters and sorts
  read; ``params.<name>`` and ``tags.<name>`` (the type the batch's values share, else their
  JSON text); ``data_versions`` (``AAPL/1m@3,...``) and ``tables`` (``equity_curve,trades``);
- ``record``: the run's whole JSON record, from which ``info`` and ``load`` rebuild it exactly;
- ``table.<name>.offset|bytes|rows|digest``: where the run's table is in the sidecar.

The sidecar is the concatenation of the runs' tables, each an Arrow IPC stream (LZ4), a run's
tables side by side, then the segment's run index (:mod:`efsray.store.results.index`):
loading one run reads its index block and its tables' byte range only, and checks their
digests. Every file's size and digest are in the manifest and checked when the file is read
whole.

DuckDB, polars and pyarrow read segments as they are: ``ResultStore.files`` lists exactly the
segments of a version.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from efsray.errors import CorruptionError
from efsray.store import jsonsafe
from efsray.store.ids import id_time
from efsray.store.results.records import TABLES, decode_fields, digest

__all__ = [
    "DICTIONARY_COLUMNS",
    "ROW_GROUP_ROWS",
    "Encoded",
    "Mask",
    "PreparedRun",
    "decode_rows",
    "decode_segment",
    "decode_table",
    "encode_batch",
    "encode_table",
    "groups_holding",
    "merge_tables",
    "metric_ranges",
    "query_columns",
]

# a segment is one row group (merges stop at 32,768 rows): a query reads each segment's
# wanted column chunks as one byte range; loads by id read the run index, not row groups
# (segments written before it have row groups of 2,048 runs, read as they are)
ROW_GROUP_ROWS = 32_768
_UTC_MS = pa.timestamp("ms", tz="UTC")
# read as Arrow dictionaries by ranged reads (one writer per batch: decoding its 16,000
# copies of one string was a fifth of a query's decode time), made plain after the filter
DICTIONARY_COLUMNS = ("writer",)
_IPC = pa.ipc.IpcWriteOptions(compression="lz4")
_TABLE_COLUMNS = ("offset", "bytes", "rows", "digest")


@dataclass(frozen=True, slots=True)
class PreparedRun:
    """A run validated and encoded, ready to store: its JSON record and its tables' bytes."""

    run_id: str
    record: Mapping[str, Any]
    tables: Mapping[str, tuple[bytes, int, str]]  # name -> (Arrow IPC bytes, rows, digest)


@dataclass(frozen=True, slots=True)
class Encoded:
    """A batch as bytes: the segment's and the sidecar's (empty when no run has a table)."""

    segment: bytes
    sidecar: bytes
    table: pa.Table  # the segment's rows (for the caller's manifest entry)


def encode_table(name: str, table: pa.Table, algorithm: str) -> tuple[bytes, int, str]:
    """A table as an Arrow IPC stream: (bytes, rows, digest)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_IPC) as writer:
        writer.write_table(table)
    data = sink.getvalue().to_pybytes()
    return data, table.num_rows, digest(data, algorithm)


def decode_table(data: bytes, what: str) -> pa.Table:
    try:
        return pa.ipc.open_stream(data).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptionError(f"{what} is unreadable: {exc}; restore it from a backup") from None


def _column(values: list[Any]) -> pa.Array:
    """The values of a params/tags key: one Arrow type if they share one, else JSON text."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool} or kinds <= {str} or kinds <= {int} or kinds <= {int, float}:
        try:
            return pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            pass
    text = [None if v is None else jsonsafe.dumps(jsonsafe.encode(v, "value")).decode()
            for v in values]  # fmt: skip
    return pa.array(text, pa.string())


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return float(value) if isinstance(value, bool) else None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def encode_batch(runs: Sequence[PreparedRun], writer: str) -> Encoded:
    """The segment and sidecar bytes of ``runs`` (sorted here by run id)."""
    runs = sorted(runs, key=lambda r: r.run_id)
    decoded = [decode_fields(r.record) for r in runs]
    columns: dict[str, pa.Array] = {
        "run_id": pa.array([r.run_id for r in runs], pa.string()),
        "created_at": pa.array([id_time(r.run_id) for r in runs], _UTC_MS),
        "writer": pa.array([writer] * len(runs), pa.string()),
    }
    for prefix in ("metrics", "params", "tags"):
        keys = sorted({k for d in decoded for k in (d.get(prefix) or {})})
        for key in keys:
            values = [(d.get(prefix) or {}).get(key) for d in decoded]
            if prefix == "metrics":
                columns[f"metrics.{key}"] = pa.array([_float(v) for v in values], pa.float64())
            else:
                columns[f"{prefix}.{key}"] = _column(values)
    columns["data_versions"] = pa.array(
        [",".join(f"{k}@{v}" for k, v in sorted((d.get("data_versions") or {}).items()))
         for d in decoded], pa.string(),
    )  # fmt: skip
    columns["tables"] = pa.array([",".join(sorted(r.tables)) for r in runs], pa.string())
    columns["record"] = pa.array(
        [jsonsafe.dumps(dict(r.record)).decode() for r in runs], pa.string()
    )
    parts: list[bytes] = []
    offset = 0
    names = [n for n in TABLES if any(n in r.tables for r in runs)]
    cells: dict[tuple[str, str], list[Any]] = {(n, c): [] for n in names for c in _TABLE_COLUMNS}
    for run in runs:  # a run's tables side by side: a load by id reads them in one range
        for name in names:
            if name not in run.tables:
                for c in _TABLE_COLUMNS:
                    cells[name, c].append(None)
                continue
            data, rows, dig = run.tables[name]
            for c, value in zip(_TABLE_COLUMNS, (offset, len(data), rows, dig), strict=True):
                cells[name, c].append(value)
            parts.append(data)
            offset += len(data)
    for name in names:
        for c in _TABLE_COLUMNS:
            kind = pa.string() if c == "digest" else pa.int64()
            columns[f"table.{name}.{c}"] = pa.array(cells[name, c], kind)
    table = pa.table(columns)
    return Encoded(_parquet(table), b"".join(parts), table)


def _parquet(table: pa.Table) -> bytes:
    """Parquet with a CRC-32 in every page (a ranged read verifies what it decodes), and
    statistics on every column but the records and the sidecar digests (no query filters
    them: their min/max would only make the footer, read by every query, bigger)."""
    sink = pa.BufferOutputStream()
    stats = [n for n in table.column_names if n != "record" and not n.endswith(".digest")]
    pq.write_table(
        table, sink, compression={n: _codec(n) for n in table.column_names},
        row_group_size=ROW_GROUP_ROWS, write_statistics=stats, write_page_checksum=True,
        use_dictionary=[n for n in table.column_names if _repetitive(n)],
        column_encoding={n: e for n, e in _ENCODINGS.items() if n in table.column_names},
    )  # fmt: skip
    return bytes(sink.getvalue().to_pybytes())


# sorted ids share their time prefix, times grow by a few ms: on a segment of 16,000 runs,
# run_id 330 -> 274 KB and created_at 64 KB -> 108 bytes, decoded 0.28 -> 0.04 ms
# (run_id as fast as before); DuckDB, polars and pyarrow read both encodings
_ENCODINGS = {"run_id": "DELTA_BYTE_ARRAY", "created_at": "DELTA_BINARY_PACKED"}


def _repetitive(column: str) -> bool:
    """Columns whose values repeat (writers, parameters, tags, table names) get a
    dictionary; ids, times, metrics and offsets are unique per run, where a dictionary only
    costs: on a segment of 16,000 runs, decoding 8 query columns took 1.8 ms without their
    dictionaries against 2.7 ms with (and the file was 8% smaller)."""
    return column in ("writer", "data_versions", "tables") or column.startswith(
        ("params.", "tags.")
    )


def _codec(column: str) -> str:
    """ZSTD for the text a load by id or a merge reads (records, tags, sidecar digests), LZ4
    for what queries decode (ids, times, metrics, params): measured on a segment of 16,000
    runs, decoding 8 query columns took 1.7 ms with LZ4 against 3.9 ms with ZSTD (random
    float metrics do not compress anyway), for a file 10% bigger."""
    text = column in ("record", "data_versions", "tables") or column.startswith(("tags.", "table."))
    return "zstd" if text else "lz4"


def metric_ranges(table: pa.Table) -> dict[str, tuple[float, float]]:
    """The finite (min, max) of every ``metrics.*`` column that has a finite value."""
    import pyarrow.compute as pc

    out: dict[str, tuple[float, float]] = {}
    for name in table.column_names:
        if not name.startswith("metrics."):
            continue
        column = table.column(name)
        finite = column.filter(pc.is_finite(column))
        if len(finite) == 0:
            continue
        bounds = pc.min_max(finite).as_py()
        out[name[8:]] = (float(bounds["min"]), float(bounds["max"]))
    return out


def created_range(table: pa.Table) -> tuple[int, int]:
    import pyarrow.compute as pc

    bounds = pc.min_max(table.column("created_at").cast(pa.int64())).as_py()
    return int(bounds["min"]), int(bounds["max"])


Mask = Callable[[pa.Table], Any]  # rows -> a boolean array: which rows pass


def decode_segment(
    data: bytes | memoryview,
    what: str,
    *,
    columns: Sequence[str] | None = None,
    filters: Mask | None = None,
    run_ids: Sequence[str] | None = None,
    whole: bool = False,
) -> pa.Table:
    """A segment's rows (from its whole bytes): see :func:`decode_rows`."""
    try:
        source = pq.ParquetFile(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptionError(f"{what} is unreadable: {exc}; restore it from a backup") from None
    groups = None if run_ids is None else _groups_holding(source, sorted(run_ids))
    return decode_rows(source, what, columns=columns, filters=filters, groups=groups,
                       whole=whole)  # fmt: skip


def query_columns(names: Sequence[str], columns: Sequence[str] | None) -> list[str]:
    """The columns to decode: ``columns`` (those present), or by default every column a
    query returns (not the records, not the sidecar offsets)."""
    if columns is None:
        return [n for n in names if n != "record" and not n.startswith("table.")]
    have = set(names)
    return [c for c in columns if c in have]


def decode_rows(
    source: pq.ParquetFile,
    what: str,
    *,
    columns: Sequence[str] | None = None,
    filters: Mask | None = None,
    groups: Sequence[int] | None = None,
    whole: bool = False,
) -> pa.Table:
    """A segment's rows: only ``columns`` (see :func:`query_columns`; ``whole``: every
    column, as a merge needs), only rows passing ``filters``, only row ``groups`` (None:
    all). Decoded on the calling thread: queries read segments in parallel already, and
    pyarrow's own threads only contend with them on a busy machine (measured: 2x slower)."""
    try:
        wanted = None if whole else query_columns(source.schema_arrow.names, columns)
        if groups is None:
            table = source.read(columns=wanted, use_threads=False)
        else:
            table = source.read_row_groups(groups, columns=wanted, use_threads=False)
        table = table if filters is None else table.filter(filters(table))
        return _plain(table)
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptionError(f"{what} is unreadable: {exc}; restore it from a backup") from None


def _plain(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary columns (``DICTIONARY_COLUMNS``, read as dictionaries)
    as plain values: cast after the filter, only the matching rows' values are made."""
    for i, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(i, field.name, table.column(i).cast(field.type.value_type))
    return table


def _groups_holding(source: pq.ParquetFile, run_ids: Sequence[str]) -> list[int]:
    return groups_holding(source.metadata, source.schema_arrow.names, run_ids)


def groups_holding(
    meta: pq.FileMetaData, names: Sequence[str], run_ids: Sequence[str]
) -> list[int]:
    """The row groups whose run-id statistics can hold one of ``run_ids`` (the segment is
    sorted by run id)."""
    index = list(names).index("run_id")
    groups = []
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(index).statistics
        unknown = stats is None or not stats.has_min_max
        if unknown or any(stats.min <= i <= stats.max for i in run_ids):
            groups.append(g)
    return groups


def merge_tables(tables: Sequence[pa.Table], bases: Sequence[int]) -> pa.Table:
    """Segments' rows as one table sorted by run id, each one's sidecar offsets moved by its
    sidecar's position (``bases``) in the merged sidecar."""
    import pyarrow.compute as pc

    moved = []
    for table, base in zip(tables, bases, strict=True):
        for name in TABLES:
            column = f"table.{name}.offset"
            if column in table.column_names and base:
                index = table.column_names.index(column)
                table = table.set_column(index, column, pc.add(table.column(column), base))
        moved.append(table)
    merged = pa.concat_tables(moved, promote_options="permissive")
    return merged.sort_by("run_id")


def encode_rows(table: pa.Table) -> bytes:
    return _parquet(table)


def created_ms(when: dt.datetime) -> int:
    return math.floor(when.timestamp() * 1000)
