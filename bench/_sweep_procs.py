"""The sweep benchmark's plain processes (no Ray): the same sweep split over N local sweeps,
and the machine's ceiling, N processes running only the backtests. Each child imports
everything and loads what it needs, says "ready", and starts its work when every child is
ready, so the clock measures the work alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

GRID = "fast=5:50:5,slow=60:150:10"  # 10 x 10 = 100 parameter sets, all valid
POINTS = 100


def forget_results(root: Path) -> None:
    """Remove every stored sweep result, so that the next run computes everything."""
    shutil.rmtree(root / "results" / "sweeps", ignore_errors=True)
    shutil.rmtree(root / "results" / "backtests", ignore_errors=True)
    shutil.rmtree(root / "results" / "tables", ignore_errors=True)


_CHILD = """
import json, os, sys, time
args = json.loads(sys.argv[1])
os.sched_setaffinity(0, args["cpus"])
from efsray.backtest import BacktestConfig
from efsray.cluster.sweep import run_sweep
print("ready", flush=True)
sys.stdin.readline()
report = run_sweep(args["root"], symbols=args["symbols"], timeframe=args["timeframe"],
                   strategy="ma_crossover", grid=args["grid"], executor="local",
                   config=BacktestConfig(fee_bps=1.0, slippage_bps=1.0))
print(json.dumps({"computed": report.computed}), flush=True)
"""


def process_pool_run(root: Path, symbols: list[str], timeframe: str, n: int) -> float:
    """The same work split over ``n`` plain OS processes without Ray (each a local sweep of
    its share of the symbols, writing its results to the store under test), started
    together. Returns the wall time from the start signal to the last process done."""
    forget_results(root)
    args = [
        {
            "root": str(root),
            "symbols": ",".join(symbols[i::n]),
            "timeframe": timeframe,
            "grid": GRID,
            "cpus": cpus_for(n),
        }
        for i in range(n)
    ]
    wall, _ = _started_together(_CHILD, args, len(symbols) * POINTS, f"{n} plain processes")
    return wall


_CEILING_CHILD = """
import json, os, sys, time
args = json.loads(sys.argv[1])
os.sched_setaffinity(0, args["cpus"])
from efsray.backtest import BacktestConfig, Backtester, get_strategy, parse_grid
from efsray.store import Store
store = Store(args["root"], create=False)
closes = [store.market.read(s, args["timeframe"], columns=["close"]).column("close").to_numpy()
          for s in args["symbols"]]
strategy = get_strategy("ma_crossover")
points = strategy.expand(parse_grid(args["grid"])).points
config = BacktestConfig(fee_bps=1.0, slippage_bps=1.0)
print("ready", flush=True)
sys.stdin.readline()
cpu = time.process_time()
for close in closes:
    backtester = Backtester(close, timeframe=args["timeframe"], config=config)
    for point in points:
        backtester.run(strategy, point)
print(json.dumps({"computed": len(closes) * len(points), "cpu_s": time.process_time() - cpu}),
      flush=True)
"""


def _started_together(
    script: str, args: list[dict[str, Any]], expected: int, what: str
) -> tuple[float, list[dict[str, Any]]]:
    """Start one child per argument, wait until every one is ready (imports and data loaded,
    off the clock), start them at once; the wall time from the start to the last one done,
    and what each reported."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(arg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for arg in args
    ]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = []
    for proc in procs:
        assert proc.stdout is not None
        reports.append(json.loads(proc.stdout.readline()))
    wall = time.perf_counter() - started
    for proc in procs:
        proc.wait(timeout=60)
    computed = sum(r["computed"] for r in reports)
    if computed != expected:
        raise SystemExit(f"{what} computed {computed} backtests, expected {expected}")
    return wall, reports


def ceiling_run(root: Path, symbols: list[str], timeframe: str, n: int) -> dict[str, float]:
    """The machine's ceiling for this compute: ``n`` plain processes on the ``n`` cores, each
    running only the backtests of its share of the symbols (bars loaded before the clock
    starts; no store writes, no Ray, no results kept). Wall time and CPU per backtest."""
    args = [
        {
            "root": str(root),
            "symbols": symbols[i::n],
            "timeframe": timeframe,
            "grid": GRID,
            "cpus": cpus_for(n),
        }
        for i in range(n)
    ]
    wall, reports = _started_together(
        _CEILING_CHILD, args, len(symbols) * POINTS, f"the {n}-process ceiling"
    )
    return {"wall_s": wall, "cpu_s": sum(r["cpu_s"] for r in reports)}


def cpus_for(workers: int) -> list[int]:
    """The first ``workers`` cores this process may use (all of them if there are fewer)."""
    return sorted(os.sched_getaffinity(0))[:workers]
