"""``efsray results ls|show|migrate``: stored backtest runs from the shell."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich import box
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


_PREFERRED = ("sharpe", "total_return", "max_drawdown", "sortino", "win_rate")
DEFAULT_LIMIT = 20


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
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            min=1,
            max=10**9,
            help=f"At most N runs (default {DEFAULT_LIMIT} in the table; --json: every run).",
        ),
    ] = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Every matching run.")] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns",
            "-c",
            help="Comma-separated columns to show, e.g. 'sharpe,params.fast,created_at' "
            "(a bare name is a metric). Default: 3 metrics and the parameters.",
        ),
    ] = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List runs (oldest first unless --sort), at most --limit of them (20 in the table by
    default; --json and --all list every match unless --limit is given).
    Runs committed on another host in the last minute may be missing (NFS caching)."""
    if limit is None:
        all_runs = all_runs or json_out  # a machine reading --json must not lose runs silently
        limit = DEFAULT_LIMIT
    tags = dict(_parse_tag(t) for t in tag or ())
    results = _open(root, env_file)
    frame = results.query(
        strategy, since=since, until=until, where=where or (), order_by=sort,
        ascending=not desc, limit=None if tags else (None if all_runs else limit + 1),
    )  # fmt: skip
    for key, text in tags.items():
        column = f"tags.{key}"
        if column not in frame.columns:
            frame = frame.iloc[0:0]
            break
        frame = frame[frame[column].map(lambda value, text=text: _tag_matches(value, text))]
    more = not all_runs and len(frame) > limit
    if not all_runs:
        frame = frame.head(limit)
    if json_out:
        print_json(frame.to_dict(orient="records"))
        return
    shown = _columns(frame, columns)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    table.add_column("run id", no_wrap=True, min_width=26)  # whole: `results show` needs it
    for name in shown:
        if name == "params":
            table.add_column("params", overflow="fold", ratio=1)
        else:
            right = name.startswith("metrics.")
            justify: Literal["left", "right"] = "right" if right else "left"
            table.add_column(_header(name), no_wrap=True, overflow="ellipsis", justify=justify)
    for record in frame.to_dict(orient="records"):
        cells = [str(record.get("run_id", ""))]
        for name in shown:
            if name == "params":
                cells.append(" ".join(
                    f"{c[7:]}={_fmt(record[c])}" for c in frame.columns
                    if c.startswith("params.") and not _missing(record.get(c))
                ))  # fmt: skip
            elif name == "created_at":
                cells.append(str(record.get(name, ""))[:16])
            else:
                cells.append(_fmt(record.get(name)))
        table.add_row(*[escape(c) for c in cells])
    console.print(table)
    if more:
        console.print(f"{len(frame)} runs shown; more match (--limit N, --all, or --json)")
    else:
        console.print(f"{len(frame)} runs")


def _columns(frame: Any, wanted: str | None) -> list[str]:
    """Which columns to show: the user's, or the strategy (when several), 3 metrics
    (the usual ones first) and the parameters folded into one column."""
    have = list(frame.columns)
    if wanted:
        out = []
        for name in (n.strip() for n in wanted.split(",")):
            if not name:
                continue
            column = name if name in have or name == "params" else f"metrics.{name}"
            if column not in have and column != "params":
                from efsray.errors import InvalidDataError

                raise InvalidDataError(
                    f"--columns: no column {name!r}; columns here: "
                    f"{', '.join(c for c in have if c != 'run_id')}"
                )
            out.append(column)
        return out
    metrics = [c for c in have if c.startswith("metrics.")]
    preferred = [f"metrics.{m}" for m in _PREFERRED if f"metrics.{m}" in metrics]
    chosen = (preferred + [m for m in metrics if m not in preferred])[:3]
    out = []
    if "strategy" in have and frame["strategy"].nunique() > 1:
        out.append("strategy")
    out += chosen
    if any(c.startswith("params.") for c in have):
        out.append("params")
    return out


def _header(column: str) -> str:
    name = column.split(".", 1)[1] if column.startswith("metrics.") else column
    return {"total_return": "return", "max_drawdown": "max dd", "created_at": "created"}.get(
        name, name
    )


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
    item = getattr(value, "item", None)  # numpy scalars from the DataFrame
    if callable(item):
        value = item()
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.3g}"
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


@results_app.command("migrate")
def migrate_cmd(
    strategy: Annotated[
        str | None, typer.Option("--strategy", "-s", help="Only this strategy.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and report; write and remove nothing.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=1_000_000, help="Runs per committed batch.")
    ] = 1000,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Move runs of the old one-file-per-run layout into the results table (idempotent:
    run it again after an interruption). Damaged runs are skipped, kept, and listed."""
    report = _open(root, env_file).migrate(strategy, dry_run=dry_run, batch_size=batch_size)
    if json_out:
        from efsray.cli._common import to_jsonable

        print_json(to_jsonable(report))
        return
    verb = "would migrate" if dry_run else "migrated"
    count = report.found - len(report.skipped) if dry_run else report.migrated
    console.print(
        f"{verb} {count} of {report.found} legacy runs"
        + (f" ({report.already} were in the table already)" if report.already else "")
        + (f"; removed {report.removed_files} legacy files" if not dry_run else "")
    )
    for path, why in report.skipped:
        console.print(f"skipped {escape(path)}: {escape(why)}")
