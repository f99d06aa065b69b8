"""``efsray demo``: the main job on the embedded default (a local directory and a local Ray).

It generates a synthetic multi-symbol market (regime-switching GBM with trends), ingests it
into the store, sweeps three strategies over every symbol as Ray tasks that read and write the
store themselves, keeps the best parameters of each strategy as a model checkpoint, and ends
with the ranked results, a storage health line and where everything is. Re-running it is
safe and fast: unchanged market data is not rewritten, and finished backtests are reused.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
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
    import pyarrow as pa

    from efsray.cluster.sweep import SweepReport
    from efsray.store import Store

# strategy -> the grid the demo sweeps (about 70 parameter sets per symbol in all)
DEMO_GRIDS = {
    "ma_crossover": "fast=6:36:6,slow=48:240:48",
    "momentum": "lookback=12:120:12,threshold=0|0.01",
    "mean_reversion": "window=24:168:24,entry_z=1.5|2|2.5",
}


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)


def demo_cmd(
    symbols: Annotated[int, typer.Option(help="How many symbols to generate.", min=1, max=500)] = 8,
    years: Annotated[float, typer.Option(help="Years of bars per symbol.", min=0.05, max=50)] = 4.0,
    timeframe: Annotated[
        str, typer.Option(help="Bar timeframe: 1h, or 1m for a heavy run.")
    ] = "1h",
    seed: Annotated[
        int, typer.Option(help="Random seed of the generated market.", min=0, max=2**32 - 1)
    ] = 7,
    local: Annotated[
        bool, typer.Option("--local", help="Run the sweeps in this process, without Ray.")
    ] = False,
    address: AddressOpt = None,
    num_cpus: NumCpusOpt = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate a market, ingest it, sweep three strategies over it on Ray, keep the best.

    Everything lands in the store (default ./efs-data). Safe and fast to re-run: the same
    seed gives the same bars, which are not rewritten, and finished backtests are reused.
    """
    from efsray.backtest import DEFAULT_SYMBOLS, MarketModel, generate_market
    from efsray.cli.backtest import report_json, sweep_with_progress
    from efsray.store import Store

    started = time.monotonic()
    settings = settings_from(env_file)
    path = store_root(root, env_file).resolve()
    store = Store(path)
    names = list(DEFAULT_SYMBOLS[:symbols]) + [
        f"SYM{i:02d}" for i in range(len(DEFAULT_SYMBOLS), symbols)
    ]
    say = (lambda _msg: None) if json_out else err_console.print
    say(f"generating {symbols} symbols x {years:g} years of {timeframe} bars (seed {seed})")
    market = generate_market(
        names, timeframe=timeframe, years=years, seed=seed, model=MarketModel(trend_vol=0.5)
    )
    ingest = _ingest(store, market, timeframe)
    say(
        f"ingested {ingest['rows']:,} bars: {len(ingest['written'])} series written, "
        f"{len(ingest['unchanged'])} unchanged"
    )

    reports: list[SweepReport] = []

    def sweeps(executor: str, workers: Any = None) -> None:
        for strategy, grid in DEMO_GRIDS.items():
            reports.append(
                sweep_with_progress(
                    path,
                    executor=executor,
                    quiet=json_out,
                    symbols=",".join(names),
                    timeframe=timeframe,
                    strategy=strategy,
                    grid=grid,
                    workers=workers,
                )
            )

    if local:
        sweeps("local")
    else:
        from efsray.cluster import connect

        with connect(settings, address=address, num_cpus=num_cpus) as cluster:
            say(f"Ray {cluster.mode}: {cluster.nodes} node(s), {cluster.cpus:g} CPUs")
            from efsray.cluster.worker import SweepWorkers

            with SweepWorkers() as workers:  # one pool for the three sweeps
                sweeps("ray", workers)

    checkpoints = _train(path, reports)
    health = _health(path)
    elapsed = time.monotonic() - started
    if json_out:
        print_json(
            {
                "root": str(path),
                "series": store.market.infos(),
                "ingest": ingest,
                "sweeps": [report_json(r, "sharpe") | {"points": len(r.points)} for r in reports],
                "checkpoints": checkpoints,
                "health": health,
                "elapsed_s": round(elapsed, 2),
            }
        )
    else:
        _print(path, reports, checkpoints, health, elapsed)
    failed = [f for r in reports for f in r.failures]
    if failed:
        from efsray.errors import ClusterError

        raise ClusterError(f"{len(failed)} sweep task(s) failed; see above")


def _ingest(store: Store, market: dict[str, pa.Table], timeframe: str) -> dict[str, Any]:
    """Write each generated series unless the store already holds exactly these bars."""
    written, unchanged = [], []
    for symbol, table in market.items():
        if _same_series(store, symbol, timeframe, table):
            unchanged.append(symbol)
        else:
            store.market.write(symbol, timeframe, table)
            written.append(symbol)
    rows = sum(t.num_rows for t in market.values())
    return {"rows": rows, "written": written, "unchanged": unchanged}


def _same_series(store: Store, symbol: str, timeframe: str, table: pa.Table) -> bool:
    from efsray.errors import NotFoundError

    try:
        info = store.market.info(symbol, timeframe)
    except NotFoundError:
        return False
    if info.rows != table.num_rows or info.columns[:6] != tuple(table.column_names):
        return False
    stored = store.market.read(symbol, timeframe, version=info.version)
    return bool(stored.select(table.column_names).equals(table))


def _train(root: Path, reports: list[SweepReport]) -> list[dict[str, Any] | None]:
    from efsray.cluster.train import save_best
    from efsray.errors import ConfigError

    out: list[dict[str, Any] | None] = []
    for report in reports:
        if not report.points:
            out.append(None)
            continue
        try:
            out.append(save_best(root, report, metric="sharpe"))
        except ConfigError as exc:  # a store without checkpoints: say so, keep the results
            err_console.print(f"[yellow]not saving checkpoints:[/] {escape(str(exc))}")
            return out + [None] * (len(reports) - len(out))
    return out


def _health(root: Path) -> dict[str, Any]:
    from efsray.mount import check_health

    health = check_health(root, timeout=10.0)
    size = files = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            try:
                size += os.lstat(os.path.join(dirpath, name)).st_size
                files += 1
            except FileNotFoundError:
                continue
    return {**health.as_dict(), "store_bytes": size, "store_files": files}


def _print(
    root: Path,
    reports: list[SweepReport],
    checkpoints: list[dict[str, Any] | None],
    health: dict[str, Any],
    elapsed: float,
) -> None:
    table = Table(
        title="best parameters per strategy (mean over symbols)",
        title_justify="left",
        box=box.SIMPLE_HEAD,  # fits 80 columns (a pipe, a CI log)
    )
    table.add_column("strategy", no_wrap=True)
    for name in ("sharpe", "return", "max DD", "win", "trades"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("parameters", no_wrap=True)  # one name=value per line
    for report in reports:
        for row in report.ranking("sharpe")[:3]:
            table.add_row(
                report.strategy if row.rank == 1 else "",
                fmt_num(row.sharpe),
                fmt_pct(row.total_return),
                fmt_pct(row.max_drawdown),
                fmt_pct(row.win_rate),
                str(row.trades),
                escape("\n".join(f"{k}={v}" for k, v in row.params.items())),
            )
    console.print(table)
    computed = sum(r.computed for r in reports)
    reused = sum(r.reused for r in reports)
    nodes = {n for r in reports for n in r.nodes}
    console.print(
        f"{computed + reused:,} backtests ({computed:,} computed, {reused:,} reused from "
        f"earlier runs) on {len(nodes)} node(s)"
    )
    for report in reports:
        for f in report.failures:
            console.print(f"[red]failed[/] {escape(f.task_key)}: {escape(f.error)}")
    for ckpt in checkpoints:
        if ckpt:
            console.print(
                f"model {ckpt['model_id']} v{ckpt['version']} (alias {ckpt['alias']}) "
                "holds the best parameters"
            )
    status = health["status"]
    colour = "green" if status == "healthy" else "red"
    console.print(
        f"storage: [{colour}]{status}[/] (write {_ms(health.get('write_time_ms'))}, fsync "
        f"{_ms(health.get('fsync_time_ms'))}, read {_ms(health.get('read_time_ms'))}); "
        f"store {health['store_bytes'] / 2**20:,.1f} MiB in {health['store_files']:,} files, "
        f"{_gib(health.get('available_bytes'))} free"
    )
    console.print(f"store:    {escape(str(root))}")
    console.print(f"market:   {escape(str(root / 'market_data' / 'ohlcv'))}  (efsray data ls)")
    console.print(
        f"results:  {escape(str(root / 'results' / 'tables'))}  (efsray results ls --tag "
        f"sweep={reports[0].sweep_id if reports else 'ID'})"
    )
    console.print(f"models:   {escape(str(root / 'models' / 'checkpoints'))}")
    console.print(f"done in {elapsed:.1f} s; run it again: it reuses everything")


def _ms(x: Any) -> str:
    return "-" if x is None else f"{x:.1f} ms"


def _gib(x: Any) -> str:
    return "?" if x is None else f"{x / 2**30:,.1f} GiB"
