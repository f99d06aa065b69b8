"""``efsray results ls|show``: stored backtest runs from the shell."""

from __future__ import annotations

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
    sort: Annotated[str | None, typer.Option("--sort", help="Sort by a metric or column.")] = None,
    desc: Annotated[bool, typer.Option("--desc", help="Sort descending.")] = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="At most N runs.")] = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List runs (oldest first unless --sort). Runs saved on another host in the last
    minute may be missing (NFS directory caching)."""
    frame = _open(root, env_file).query(
        strategy, since=since, until=until, where=where or (), sort_by=sort,
        ascending=not desc, limit=limit,
    )  # fmt: skip
    if json_out:
        records = frame.to_dict(orient="records")
        print_json(records)
        return
    metric_cols = [c for c in frame.columns if c.startswith("metrics.")][:6]
    table = Table("run id", "strategy", "created at", *[c[8:] for c in metric_cols])
    for record in frame.to_dict(orient="records"):
        table.add_row(
            str(record.get("run_id", "")),
            escape(str(record.get("strategy", ""))),
            str(record.get("created_at", ""))[:19],
            *[_fmt(record.get(c)) for c in metric_cols],
        )
    console.print(table)
    console.print(f"{len(frame)} runs")


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
