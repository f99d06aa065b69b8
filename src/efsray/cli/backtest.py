"""``efsray backtest``: a parameter-grid sweep over stored symbols, on Ray; ``efsray
strategies``: what can be swept."""

from __future__ import annotations

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
    fmt_num,
    fmt_pct,
    print_json,
    settings_from,
    store_root,
)
from efsray.cli._ray import AddressOpt, NumCpusOpt

if TYPE_CHECKING:
    from efsray.cluster.sweep import SweepReport

__all__ = ["print_report", "register", "report_json", "results_dir", "sweep_with_progress"]


def register(app: typer.Typer) -> None:
    app.command("backtest")(backtest_cmd)
    app.command("strategies")(strategies_cmd)


def strategies_cmd(json_out: JsonOpt = False) -> None:
    """List the strategies, their parameters and the rules between them."""
    from efsray.backtest import describe_strategies

    described = describe_strategies()
    if json_out:
        print_json(described)
        return
    for s in described:
        console.print(f"[bold]{s['name']}[/]: {escape(s['description'])}")
        for p in s["params"]:
            default = "required" if p["default"] is None else f"default {p['default']}"
            console.print(f"  {p['name']} ({p['type']}, {default}): {escape(p['help'])}")
        for c in s["constraints"]:
            console.print(f"  rule: {c}")


def backtest_cmd(
    symbols: Annotated[
        str, typer.Option(help="Comma-separated symbols, or 'all' for every stored one.")
    ] = "all",
    timeframe: Annotated[str, typer.Option(help="Bar timeframe of the stored series.")] = "1h",
    strategy: Annotated[
        str, typer.Option(help="ma_crossover, momentum or mean_reversion (`efsray strategies`).")
    ] = "ma_crossover",
    grid: Annotated[
        str,
        typer.Option(
            help="Parameter grid: NAME=START:STOP:STEP (inclusive), NAME=A|B|C or NAME=V, "
            'comma-separated, e.g. "fast=5:50:5,slow=20:200:20".'
        ),
    ] = "fast=5:50:5,slow=20:200:20",
    fee_bps: Annotated[float, typer.Option(help="Fees, basis points per unit traded.")] = 1.0,
    slippage_bps: Annotated[
        float, typer.Option(help="Slippage, basis points per unit traded.")
    ] = 1.0,
    long_only: Annotated[bool, typer.Option(help="Never go short.")] = False,
    rank_by: Annotated[str, typer.Option(help="Metric to rank parameter sets by.")] = "sharpe",
    top: Annotated[int, typer.Option(help="Rows of the ranked table.", min=1)] = 10,
    train: Annotated[
        bool,
        typer.Option(
            "--train", help="Save the best parameter set as a model checkpoint (alias 'best')."
        ),
    ] = False,
    local: Annotated[
        bool, typer.Option("--local", help="Run in this process without Ray (the reference).")
    ] = False,
    max_retries: Annotated[
        int,
        typer.Option(min=0, help="Retries of a task whose worker died or hit a storage error."),
    ] = 3,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Backtest every parameter set of a grid on every symbol, as Ray tasks.

    Each task reads its symbol from the store at the version pinned when the sweep started,
    saves each backtest as a run in the store's results (`efsray results ls --tag
    sweep=ID`), and returns a summary. Results are kept: re-running the
    same sweep on the same data reuses them. Exits non-zero if any task failed for good.
    """
    from efsray.backtest import BacktestConfig
    from efsray.cluster.sweep import METRICS
    from efsray.errors import ConfigError

    if rank_by not in METRICS:
        raise ConfigError(f"--rank-by {rank_by!r}: choose one of {', '.join(METRICS)}")
    settings = settings_from(env_file)
    path = store_root(root, env_file)
    config = BacktestConfig(fee_bps=fee_bps, slippage_bps=slippage_bps, allow_short=not long_only)
    sweep = {
        "symbols": symbols,
        "timeframe": timeframe,
        "strategy": strategy,
        "grid": grid,
        "config": config,
        "max_retries": max_retries,
    }
    if local:
        report = sweep_with_progress(path, executor="local", quiet=json_out, **sweep)
        checkpoint = _train(path, report, rank_by, train)
    else:
        from efsray.cluster import connect

        with connect(settings, address=address, num_cpus=num_cpus):
            report = sweep_with_progress(path, executor="ray", quiet=json_out, **sweep)
            checkpoint = _train(path, report, rank_by, train)
    if json_out:
        print_json(report_json(report, rank_by, checkpoint))
    else:
        print_report(report, rank_by, top, checkpoint)
    _raise_on_failures(report)


def _train(root: Path, report: SweepReport, metric: str, train: bool) -> dict[str, Any] | None:
    """Save the best parameters (``--train``), where the store is (see near_the_store)."""
    if not train or not report.points:
        return None
    from efsray.cluster.sweep import near_the_store
    from efsray.cluster.train import save_best

    checkpoint: dict[str, Any] = near_the_store(save_best, str(root), report, metric)
    return checkpoint


def sweep_with_progress(root: Path, *, executor: str, quiet: bool, **sweep: Any) -> SweepReport:
    """Run a sweep with a progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from efsray.cluster.sweep import run_sweep

    columns = (
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err_console, transient=True, disable=quiet) as bar:
        task = bar.add_task(f"{sweep['strategy']} sweep", total=None)

        def update(done: int, total: int, failed: int) -> None:
            label = f"{sweep['strategy']} sweep" + (f" ({failed} failed)" if failed else "")
            bar.update(task, completed=done + failed, total=total, description=label)

        return run_sweep(root, executor=executor, progress=update, **sweep)  # type: ignore[arg-type]


def print_report(
    report: SweepReport, metric: str, top: int, checkpoint: dict[str, Any] | None = None
) -> None:
    """The ranked table and the run's vital signs, for humans."""
    s = report.summary()
    console.print(
        f"[bold]{report.strategy}[/] on {len(report.symbols)} symbol(s) ({report.timeframe}): "
        f"{s['points']}/{s['expected_points']} backtests ({s['computed']} computed, "
        f"{s['reused']} reused) in {s['tasks']} tasks on {s['nodes']} node(s), "
        f"{report.wall_s:.1f} s"
    )
    if report.rejected:
        reasons: dict[str, int] = {}
        for r in report.rejected:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        detail = ", ".join(f"{n} break {reason}" for reason, n in reasons.items())
        console.print(f"skipped {len(report.rejected)} parameter sets of the grid ({detail})")
    ranking = report.ranking(metric)
    table = Table(title=f"best parameter sets by mean {metric} over symbols", title_justify="left")
    for name in ("#", "sharpe", "sortino", "return", "annual", "max DD", "win", "trades"):
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name) + 1)
    table.add_column("parameters", overflow="fold")
    for row in ranking[:top]:
        table.add_row(
            str(row.rank),
            fmt_num(row.sharpe),
            fmt_num(row.sortino),
            fmt_pct(row.total_return),
            fmt_pct(row.annualized_return),
            fmt_pct(row.max_drawdown),
            fmt_pct(row.win_rate),
            str(row.trades),
            escape(" ".join(f"{k}={v}" for k, v in row.params.items())),
        )
    if ranking:
        console.print(table)
    if report.retried:
        tasks = ", ".join(f"{k} ({n} attempts)" for k, n in sorted(report.retried.items()))
        console.print(f"[yellow]retried[/] {len(report.retried)} task(s): {escape(tasks)}")
    for f in report.failures:
        console.print(
            f"[red]failed[/] task {escape(f.task_key)} ({f.points} backtests of "
            f"{escape(f.symbol)}): {escape(f.error)}"
        )
    if checkpoint:
        console.print(
            f"saved the best parameters as model {checkpoint['model_id']} "
            f"v{checkpoint['version']} (alias {checkpoint['alias']})"
        )
    console.print(
        f"results: {escape(results_dir(report))} (sweep {report.sweep_id}): "
        f"efsray results ls --strategy {report.strategy} --tag sweep={report.sweep_id}"
    )


def report_json(
    report: SweepReport, metric: str, checkpoint: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "summary": report.summary(),
        "ranking": report.ranking(metric),
        "points": [
            {
                "symbol": p.symbol,
                "key": p.key,
                "result_id": p.result_id,
                "params": p.params,
                "metrics": p.metrics,
            }
            for p in report.points
        ],
        "rejected": [{"params": r.params, "reason": r.reason} for r in report.rejected],
        "failures": report.failures,
        "retried": report.retried,
        "checkpoint": checkpoint,
        "results": results_dir(report),
    }


def results_dir(report: SweepReport) -> str:
    """Where the sweep's results are: the results table of its strategy (each run tagged
    with the sweep id)."""
    return str(Path(report.root) / "results" / "tables" / report.strategy)


def _raise_on_failures(report: SweepReport) -> None:
    from efsray.errors import ClusterError

    if report.failures:
        lost = sum(f.points for f in report.failures)
        raise ClusterError(
            f"{len(report.failures)} task(s) failed after retries; {lost} backtest(s) have no "
            "result (listed above). Fix the cause and re-run: finished results are reused"
        )
