"""``efsray init`` and ``efsray data ...``: the market-data store from the shell."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from efsray.cli._common import (
    EnvFileOpt,
    JsonOpt,
    RootOpt,
    console,
    err_console,
    fmt_size,
    print_json,
    store_root,
)
from efsray.errors import InvalidDataError

if TYPE_CHECKING:
    import pyarrow as pa

    from efsray.store import Store

data_app = typer.Typer(
    help="Market data (OHLCV bars): ingest files, show, list, history, compact.",
    no_args_is_help=True,
)

SymbolArg = Annotated[str, typer.Argument(help="Symbol, e.g. AAPL.", show_default=False)]
TimeframeArg = Annotated[
    str, typer.Argument(help="Timeframe, e.g. 1m, 1h, 1d.", show_default=False)
]


def _open(root: Path | None, env_file: Path | None, *, create: bool = False) -> Store:
    from efsray.store import Store

    return Store(store_root(root, env_file), create=create)


def register(app: typer.Typer) -> None:
    app.command("init")(init_cmd)
    app.add_typer(data_app, name="data")


def init_cmd(root: RootOpt = None, env_file: EnvFileOpt = None, json_out: JsonOpt = False) -> None:
    """Create the store's directory tree and format marker (idempotent; adopts an existing
    directory)."""
    from efsray.store import StoreLayout

    path = store_root(root, env_file)
    created = StoreLayout(path).init()
    if json_out:
        print_json({"root": str(path.resolve()), "created": created})
    else:
        verb = "created" if created else "already initialized:"
        console.print(f"efsray store {verb} {path.resolve()}")


@data_app.command("ingest")
def ingest_cmd(
    file: Annotated[
        Path,
        typer.Argument(help="A .csv (or .csv.gz) or .parquet file of bars.", show_default=False),
    ],
    symbol: Annotated[str, typer.Option("--symbol", "-s", help="Symbol to store the bars as.")],
    timeframe: Annotated[str, typer.Option("--timeframe", "-t", help="Timeframe, e.g. 1m.")],
    column_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Rename a vendor column: 'Date=timestamp'. Repeat for several. Names are "
            "case-insensitive; ts/time/date/datetime and vol are understood already.",
        ),
    ] = None,
    tz: Annotated[
        str, typer.Option("--tz", help="Time zone of naive timestamps, e.g. America/New_York.")
    ] = "UTC",
    timestamp_unit: Annotated[
        str | None,
        typer.Option("--timestamp-unit", help="Unit of integer epoch timestamps: s, ms, us, ns."),
    ] = None,
    timestamp_format: Annotated[
        str | None,
        typer.Option("--timestamp-format", help="strftime format of timestamp strings."),
    ] = None,
    encoding: Annotated[
        str,
        typer.Option("--encoding", help="Text encoding of a CSV file, e.g. latin-1 or cp1252."),
    ] = "utf-8",
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ingest a CSV or Parquet file as one atomic commit (all bars or none).

    Bars whose timestamps are already stored are replaced, so re-ingesting a file is safe.
    """
    mapping = _parse_map(column_map or [])
    table = _read_file(file, quiet=json_out, encoding=encoding, timestamp_format=timestamp_format)
    store = _open(root, env_file, create=True)
    with (
        console.status(f"validating and committing {table.num_rows:,} bars", spinner="dots")
        if (not json_out)
        else _Null()
    ):
        info = store.market.append(
            symbol,
            timeframe,
            table,
            column_map=mapping,
            naive_tz=tz,
            timestamp_unit=timestamp_unit,
            timestamp_format=timestamp_format,
        )
    if json_out:
        print_json(info)
        return
    console.print(
        f"{symbol}/{timeframe}: version {info.version}, {info.rows_written:,} bars written "
        f"({info.rows_replaced:,} replaced), {info.rows:,} bars stored in {info.segments} "
        "segment(s)"
    )


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _parse_map(items: list[str]) -> dict[str, str]:
    mapping = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep or not target.strip():  # an empty SOURCE names an unnamed column
            raise InvalidDataError(
                f"--map {item!r} is not SOURCE=TARGET, e.g. --map 'Date=timestamp' (or "
                "--map '=timestamp' for a column without a name)"
            )
        mapping[source.strip()] = target.strip()
    return mapping


def _read_file(
    path: Path, *, quiet: bool, encoding: str = "utf-8", timestamp_format: str | None = None
) -> pa.Table:
    import codecs

    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    try:
        codecs.lookup(encoding)
    except LookupError:
        raise InvalidDataError(
            f"--encoding {encoding!r} is not a known encoding; e.g. utf-8, latin-1, cp1252"
        ) from None
    # With --timestamp-format, CSV timestamps are parsed with it, not by pyarrow's ISO
    # inference (which would leave the format unused, and a wrong one unnoticed).
    convert = pacsv.ConvertOptions(
        timestamp_parsers=[timestamp_format] if timestamp_format else None
    )
    if not path.is_file():
        raise InvalidDataError(f"{path} does not exist or is not a file")
    name = path.name.lower()
    size = path.stat().st_size
    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet or size < 8 << 20,
    )
    batches = []
    try:
        with progress:
            task = progress.add_task(f"reading {path.name}", total=size)
            if name.endswith((".parquet", ".pq")):
                pf = pq.ParquetFile(path)
                for i in range(pf.num_row_groups):
                    batches.append(pf.read_row_group(i))
                    progress.update(task, completed=size * (i + 1) // pf.num_row_groups)
                return pa.concat_tables(batches) if batches else pf.schema_arrow.empty_table()
            if name.endswith((".csv", ".csv.gz", ".txt")):
                with pa.OSFile(str(path)) as raw:
                    stream = pa.CompressedInputStream(raw, "gzip") if name.endswith(".gz") else raw
                    reader = pacsv.open_csv(
                        stream,
                        read_options=pacsv.ReadOptions(encoding=encoding),
                        convert_options=convert,
                    )
                    for batch in reader:
                        batches.append(batch)
                        progress.update(task, completed=min(size, raw.tell()))
                    return pa.Table.from_batches(batches, schema=reader.schema)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as exc:
        hint = (
            " (not UTF-8? pass --encoding latin-1 or cp1252)"
            if "UTF8" in str(exc) or isinstance(exc, UnicodeDecodeError)
            else ""
        )
        raise InvalidDataError(f"cannot read {path}: {exc}{hint}") from None
    raise InvalidDataError(f"{path}: unknown file type; use .csv, .csv.gz or .parquet")


@data_app.command("show")
def show_cmd(
    symbol: SymbolArg,
    timeframe: TimeframeArg,
    start: Annotated[str | None, typer.Option(help="First time to show (ISO-8601).")] = None,
    end: Annotated[str | None, typer.Option(help="Last time to show (ISO-8601).")] = None,
    tail: Annotated[
        int | None, typer.Option("--tail", "-n", help="Show the newest N bars.", min=0, max=2**62)
    ] = None,
    columns: Annotated[
        str | None, typer.Option(help="Comma-separated columns, e.g. close,volume.")
    ] = None,
    version: Annotated[
        int | None, typer.Option(help="Read as of this version.", min=1, max=2**62)
    ] = None,
    csv_out: Annotated[bool, typer.Option("--csv", help="Write CSV to stdout.")] = False,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show bars of a series: the newest 20 by default, a time range with --start/--end."""
    store = _open(root, env_file)
    cols = [c.strip() for c in columns.split(",")] if columns else None
    if start is None and end is None:
        table = store.market.tail(
            symbol, timeframe, 20 if tail is None else tail, columns=cols, version=version
        )
    else:
        table = store.market.read(
            symbol, timeframe, start=start, end=end, columns=cols, version=version
        )
        if tail is not None:
            table = table.slice(max(0, table.num_rows - tail))
    if _machine_output(table, csv_out=csv_out, json_out=json_out):
        return
    info = store.market.info(symbol, timeframe, version=version)
    view = Table(
        title=f"{symbol}/{timeframe} v{info.version}: {table.num_rows:,} of {info.rows:,} bars"
    )
    for name in table.column_names:
        view.add_column(name, justify="left" if name == "timestamp" else "right")
    for row in table.to_pylist():
        view.add_row(*(_fmt(v) for v in row.values()))
    console.print(view)


def _fmt(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S" if value.second else "%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".")
    return "" if value is None else str(value)


@data_app.command("ls")
def ls_cmd(root: RootOpt = None, env_file: EnvFileOpt = None, json_out: JsonOpt = False) -> None:
    """List every stored series with its latest version, size and time span."""
    infos = _open(root, env_file).market.infos()
    if json_out:
        print_json(infos)
        return
    if not infos:
        console.print("no market data yet: `efsray data ingest FILE --symbol S --timeframe T`")
        return
    view = Table(title="market data")
    for col in ("symbol", "timeframe", "version", "bars", "from", "to", "segments", "size"):
        view.add_column(
            col, justify="right" if col in ("version", "bars", "segments", "size") else "left"
        )
    for i in infos:
        view.add_row(
            i.symbol,
            i.timeframe,
            str(i.version),
            f"{i.rows:,}",
            _fmt(i.start),
            _fmt(i.end),
            str(i.segments),
            fmt_size(i.bytes),
        )
    console.print(view)


@data_app.command("history")
def history_cmd(
    symbol: SymbolArg,
    timeframe: TimeframeArg,
    limit: Annotated[
        int | None, typer.Option(help="Show at most N versions.", min=1, max=2**62)
    ] = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Versions of a series, newest first. Read any of them with `data show --version`."""
    history = _open(root, env_file).market.history(symbol, timeframe, limit=limit)
    if json_out:
        print_json(history)
        return
    view = Table(title=f"{symbol}/{timeframe} history")
    for col in ("version", "committed", "operation", "bars", "written", "replaced", "writer"):
        view.add_column(col)
    for h in history:
        view.add_row(
            str(h.version),
            h.committed_at[:19].replace("T", " "),
            h.operation,
            f"{h.rows:,}",
            f"{h.rows_written:,}",
            f"{h.rows_replaced:,}",
            h.writer,
        )
    console.print(view)


@data_app.command("compact")
def compact_cmd(
    symbol: Annotated[str | None, typer.Argument(help="Only this symbol.")] = None,
    timeframe: Annotated[str | None, typer.Argument(help="Only this timeframe.")] = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Merge small segments so reads stay fast (every series, or one). Safe while others
    write: it commits like any writer and rebases if someone commits first."""
    store = _open(root, env_file)
    if (symbol is None) != (timeframe is None):
        raise InvalidDataError("give both SYMBOL and TIMEFRAME, or neither to compact everything")
    if symbol is not None and timeframe is not None:
        one = store.market.compact(symbol, timeframe)
        done = [one] if one else []
    else:
        done = store.market.compact_all()
    if json_out:
        print_json(done)
        return
    if not done:
        console.print("nothing to compact")
    for info in done:
        console.print(
            f"{info.symbol}/{info.timeframe}: version {info.version}, "
            f"{info.rows:,} bars in {info.segments} segment(s)"
        )


def _machine_output(table: pa.Table, *, csv_out: bool, json_out: bool) -> bool:
    """Write ``table`` as CSV or JSON on stdout if asked; True if it did."""
    if csv_out:
        import pyarrow.csv as pacsv

        sink = sys.stdout.buffer
        pacsv.write_csv(table, sink)
        sink.flush()
        return True
    if json_out:
        print_json(table.to_pylist())
        return True
    return False


@data_app.command("sql")
def sql_cmd(
    query: Annotated[
        str,
        typer.Argument(
            help="A DuckDB query; market('SYM', 'TF') (or market('SYM', 'TF', VERSION)) is a "
            "series as a table, e.g. \"SELECT max(close) FROM market('AAPL', '1m')\".",
            show_default=False,
        ),
    ],
    csv_out: Annotated[bool, typer.Option("--csv", help="Write CSV to stdout.")] = False,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """SQL over the stored series with DuckDB (pip install 'efsray[sql]')."""
    from efsray.sql import query as run_query

    table = run_query(_open(root, env_file), query)
    if _machine_output(table, csv_out=csv_out, json_out=json_out):
        return
    out = Table(*[escape(n) for n in table.column_names])
    for row in table.to_pylist():
        out.add_row(*(escape(_fmt(v)) for v in row.values()))
    console.print(out)
