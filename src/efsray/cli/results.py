"""``efsray results ls|show``: stored backtest runs from the shell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from efsray.cli._common import EnvFileOpt, JsonOpt, RootOpt, console, print_json, store_root

if TYPE_CHECKING:
    from efsray.store import ResultStore

results_app = typer.Typer(
    help="Backtest results: list and filter runs, show one.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(results_app, name="results")


def _open(root: Path | None, env_file: Path | None) -> ResultStore:
    from efsray.store import Store

    return Store(store_root(root, env_file), create=False).results


@results_app.command("ls")
def ls_cmd(
    strategy: Annotated[
        str | None, typer.Option("--strategy", "-s", help="Only this strategy.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Runs created at or after (ISO 8601).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Runs created at or before (ISO 8601).")
    ] = None,
    where: Annotated[
        list[str] | None,
        typer.Option("--where", "-w", help="Metric filter like 'sharpe>=1.5'; repeat to AND."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option(
            "--tag",
            "-t",
            help="Only runs tagged KEY=VALUE, e.g. sweep=sw-... (a sweep's runs) or symbol=AAPL; "
            "repeat to AND.",
        ),
    ] = None,
    sort: Annotated[str | None, typer.Option("--sort", help="Sort by a metric or column.")] = None,
    desc: Annotated[bool, typer.Option("--desc", help="Sort descending.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="At most N runs.")] = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List runs (oldest first unless --sort). Runs saved on another host in the last
    minute may be missing (NFS directory caching)."""
    wanted = [_parse_tag(t) for t in tag or ()]
    frame = _open(root, env_file).query(
        strategy, since=since, until=until, where=where or (), sort_by=sort,
        ascending=not desc, limit=None if wanted else limit,
    )  # fmt: skip
    for key, text in wanted:
        column = f"tags.{key}"
        if column not in frame.columns:
            frame = frame.iloc[0:0]
            break
        frame = frame[frame[column].map(lambda value, text=text: _tag_matches(value, text))]
    if wanted and limit is not None:
        frame = frame.head(limit)
    if json_out:
        records = frame.to_dict(orient="records")
        print_json(records)
        return
    metric_cols = [c for c in frame.columns if c.startswith("metrics.")][:6]
    param_cols = [c for c in frame.columns if c.startswith("params.")]
    table = Table(title_justify="left")
    table.add_column("run id", no_wrap=True, min_width=26)  # whole: `results show` needs it
    for name in ("strategy", "created at", *[c[8:] for c in metric_cols]):
        table.add_column(name)
    if param_cols:
        table.add_column("params", overflow="fold")
    for record in frame.to_dict(orient="records"):
        params = " ".join(
            f"{c[7:]}={_fmt(record[c])}" for c in param_cols if not _missing(record.get(c))
        )
        table.add_row(
            str(record.get("run_id", "")),
            escape(str(record.get("strategy", ""))),
            str(record.get("created_at", ""))[:19],
            *[_fmt(record.get(c)) for c in metric_cols],
            *([escape(params)] if param_cols else []),
        )
    console.print(table)
    console.print(f"{len(frame)} runs")


def _parse_tag(text: str) -> tuple[str, str]:
    from efsray.errors import InvalidDataError

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidDataError(f"--tag {text!r}: write KEY=VALUE, e.g. --tag sweep=sw-0123abcd")
    return key.strip(), value


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _tag_matches(value: object, text: str) -> bool:
    """A tag as the query frame holds it against the text of --tag KEY=VALUE: strings
    compare as they are, true/false and numbers by value (a run without the tag: no)."""
    item = getattr(value, "item", None)  # numpy scalars from the DataFrame
    if callable(item):
        value = item()
    if _missing(value):
        return False
    if isinstance(value, str):
        return value == text
    if isinstance(value, bool):
        return text.strip().lower() == str(value).lower()
    if isinstance(value, int | float):
        try:
            return float(text) == value
        except ValueError:
            return False
    return str(value) == text


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@results_app.command("show")
def show_cmd(
    run_id: Annotated[str, typer.Argument(help="Run id.", show_default=False)],
    strategy: Annotated[
        str | None, typer.Option("--strategy", "-s", help="The run's strategy (faster).")
    ] = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one run whole: metrics, parameters, data versions, and its tables' sizes."""
    run = _open(root, env_file).load(run_id, strategy=strategy)
    tables: dict[str, dict[str, Any]] = {
        name: {"rows": len(frame), "columns": [str(c) for c in frame.columns]}
        for name, frame in run.tables.items()
    }
    if json_out:
        from efsray.cli._common import to_jsonable

        print_json({**to_jsonable(run.info), "table_shapes": tables})
        return
    info = run.info
    console.print(f"[bold]{info.run_id}[/] {escape(info.strategy)} {info.created_at.isoformat()}")
    console.print(f"path {escape(info.path)} (by {escape(info.writer)})")
    sections = (
        ("metrics", info.metrics),
        ("params", info.params),
        ("tags", info.tags),
        ("data versions", info.data_versions),
        ("extra", info.extra),
    )
    for title, values in sections:
        if values:
            console.print(f"[bold]{title}[/]")
            for key, value in values.items():
                console.print(f"  {escape(str(key))} = {escape(repr(value))}")
    for name, shape in tables.items():
        console.print(
            f"[bold]{name}[/]: {shape['rows']} rows, columns {escape(', '.join(shape['columns']))}"
        )
