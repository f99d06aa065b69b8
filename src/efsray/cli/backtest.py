"""``efsray backtest``: a parameter-grid sweep over stored symbols, on Ray; ``efsray
strategies``: what can be swept."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

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
    from efsray.backtest.timeframe import Calendar
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
    fee_bps: Annotated[
        float, typer.Option(help="Fees, basis points per unit traded.", min=0, max=10_000)
    ] = 1.0,
    slippage_bps: Annotated[
        float, typer.Option(help="Slippage, basis points per unit traded.", min=0, max=10_000)
    ] = 1.0,
    long_only: Annotated[bool, typer.Option(help="Never go short.")] = False,
    calendar: Annotated[
        Literal["auto", "24/7", "us-equity"],
        typer.Option(
            help="Trading calendar for annualizing (Sharpe, Sortino, annual return): 24/7 "
            "(365 days of 24 h: crypto, FX), us-equity (252 days of 6.5 h), or auto: "
            "us-equity when the first symbol's bars skip weekends, else 24/7.",
        ),
    ] = "auto",
    periods_per_year: Annotated[
        float | None,
        typer.Option(
            "--periods-per-year",
            help="Bars per year, overriding --calendar (e.g. 252 for daily stock bars).",
            min=1,
            max=31_622_400,
            show_default=False,
        ),
    ] = None,
    rank_by: Annotated[str, typer.Option(help="Metric to rank parameter sets by.")] = "sharpe",
    top: Annotated[int, typer.Option(help="Rows of the ranked table.", min=1, max=100_000)] = 10,
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
        typer.Option(
            min=0, max=100, help="Retries of a task whose worker died or hit a storage error."
        ),
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
    from efsray.backtest.timeframe import parse_timeframe
    from efsray.cluster.sweep import METRICS
    from efsray.errors import ConfigError

    if rank_by not in METRICS:
        raise ConfigError(f"--rank-by {rank_by!r}: choose one of {', '.join(METRICS)}")
    settings = settings_from(env_file)
    path = store_root(root, env_file)
    chosen = _calendar(path, symbols, timeframe, calendar, periods_per_year)
    config = BacktestConfig(
        fee_bps=fee_bps, slippage_bps=slippage_bps, allow_short=not long_only, calendar=chosen
    )
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
    bars_per_year = parse_timeframe(timeframe).periods_per_year(chosen)
    if json_out:
        print_json({**report_json(report, rank_by, checkpoint), "periods_per_year": bars_per_year})
    else:
        print_report(report, rank_by, top, checkpoint)
        console.print(
            f"annualized over {bars_per_year:,.6g} bars a year ({chosen.days_per_year:g} days "
            f"of {chosen.hours_per_day:g} h; --calendar, --periods-per-year)"
        )
    _raise_on_failures(report)


def _calendar(
    root: Path, symbols: str, timeframe: str, name: str, periods_per_year: float | None
) -> Calendar:
    """The calendar of --periods-per-year, else of --calendar, else guessed from the bars
    (the newest 2,000 of the first symbol: one small read)."""
    from efsray.backtest.timeframe import (
        CALENDARS,
        calendar_for_periods,
        guess_calendar,
        parse_timeframe,
    )

    tf = parse_timeframe(timeframe)
    if periods_per_year is not None:
        return calendar_for_periods(periods_per_year, tf)
    if name != "auto":
        return CALENDARS[name]
    from efsray.store import Store

    store = Store(root, create=False)
    wanted = [s.strip() for s in symbols.split(",") if s.strip()]
    if wanted in (["all"], ["*"]):
        wanted = sorted(sym for sym, tf_name in store.market.list_series() if tf_name == tf.name)
    if not wanted:
        return CALENDARS["24/7"]
    try:
        bars = store.market.tail(wanted[0], tf.name, 2000, columns=["close"])
    except FileNotFoundError:  # the sweep itself reports the missing series
        return CALENDARS["24/7"]
    return guess_calendar(bars.column("timestamp").cast("int64").to_pylist())


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
        f"[bold]{escape(report.strategy)}[/] on {len(report.symbols)} symbol(s) "
        f"({report.timeframe}): "
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
    rows = ranking[:top]
    params = [" ".join(f"{k}={v}" for k, v in row.params.items()) for row in rows]
    # The parameters are what the table is for: never squeezed (rich gives a pipe 80
    # columns); the less used metrics go first when the width is short.
    wide = console.width >= 70 + max((len(p) for p in params), default=0)
    table = Table(title=f"best parameter sets by mean {metric} over symbols", title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column(
        "parameters", no_wrap=True, min_width=min(60, max(map(len, params), default=10))
    )
    metrics = ["sharpe", "sortino", "return", "annual", "max DD", "win", "trades"]
    if not wide:
        metrics = [m for m in metrics if m not in ("sortino", "annual", "win")]
    for name in metrics:
        table.add_column(name, justify="right", no_wrap=True, min_width=len(name) + 1)
    for row, text in zip(rows, params, strict=True):
        values = {
            "sharpe": fmt_num(row.sharpe),
            "sortino": fmt_num(row.sortino),
            "return": fmt_pct(row.total_return),
            "annual": fmt_pct(row.annualized_return),
            "max DD": fmt_pct(row.max_drawdown),
            "win": fmt_pct(row.win_rate),
            "trades": str(row.trades),
        }
        table.add_row(str(row.rank), escape(text), *(values[m] for m in metrics))
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
