"""Sweep benchmark: backtests per second with 1, 2 and 4 Ray workers, and where task time goes.

20 symbols x 100 parameter sets (a 10 x 10 moving-average grid) over the store on local disk,
as the distributed sweep runs them: every task reads its symbol from the store at the pinned
version and commits its backtests' results in batches to the strategy's results table
(``store.results.save_batch``: one segment and one version per batch, on a background thread
that overlaps the next backtests).

N workers get N cores: every run is a fresh driver process confined (CPU affinity) to the
first N cores of the machine (all of them when N exceeds the count), with its own local Ray
of N CPUs, whose processes inherit the confinement. Without it, the one-worker run's writer
threads and Ray's own processes borrow the idle second core (measured: 1.29 cores for "one
worker"), and the speed-up of two workers is measured against more than one core's worth.
Runs are interleaved (1, 2, 4, 1, 2, 4, ...) so machine noise hits every configuration
alike; every run recomputes everything (its results are removed first), after a warm-up
sweep on the same sweep workers (one Ray actor per core, started once per driver). A
single-process run without Ray is the reference for the results, which must be identical.
Beside every Ray run, the same work split over N plain OS processes (no Ray, started
together, confined the same way) measures the scaling the machine offers at that moment.

Reported: wall time and backtests/s per configuration (medians), the speed-up against one
worker, the share of summed task time spent reading from the store, computing and waiting
for the last saves, the part of those waits that no other task's work overlapped (over wall
time x workers: what result writes cost the sweep), the time the saves took on the workers'
committer threads (overlapped with the backtests), files written per backtest, and the load
average during the runs. Goals: store reads <= 10% of task time (issue 7); 2 workers >= 1.8x
one worker on this 2-core machine, result writes <= 5% of wall time (issue 19, which also
asks for backtests/s on the EFS-like mount within 10% of local disk: run both).

    python bench/sweep.py                      # full run (a few minutes)
    python bench/sweep.py --bars 20000 --repeats 1   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import median, write_results
from efsray.backtest import BacktestConfig, generate_market
from efsray.cluster import connect
from efsray.cluster.sweep import SweepReport, run_sweep
from efsray.cluster.worker import SweepWorkers
from efsray.store import Store

GRID = "fast=5:50:5,slow=60:150:10"  # 10 x 10 = 100 parameter sets, all valid


def forget_results(root: Path) -> None:
    """Remove every stored sweep result, so that the next run computes everything."""
    shutil.rmtree(root / "results" / "sweeps", ignore_errors=True)
    shutil.rmtree(root / "results" / "backtests", ignore_errors=True)
    shutil.rmtree(root / "results" / "tables", ignore_errors=True)


def result_files(root: Path) -> int:
    """Files of the results table (segments, sidecars, manifests; superseded ones too)."""
    return sum(len(files) for _, _, files in os.walk(root / "results" / "tables"))


def one_run(root: Path, symbols: list[str], timeframe: str, **kwargs: Any) -> SweepReport:
    forget_results(root)
    report = run_sweep(
        root,
        symbols=",".join(symbols),
        timeframe=timeframe,
        strategy="ma_crossover",
        grid=GRID,
        config=BacktestConfig(fee_bps=1.0, slippage_bps=1.0),
        **kwargs,
    )
    if not report.ok or report.computed != report.expected_points:
        raise SystemExit(f"run did not compute everything: {report.summary()}")
    return report


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
    its share of the symbols), started together: the scaling this machine offers right now.
    Returns the wall time from the start signal to the last process done."""
    forget_results(root)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    procs = []
    for i in range(n):
        share = symbols[i::n]
        arg = {"root": str(root), "symbols": ",".join(share), "timeframe": timeframe,
               "grid": GRID, "cpus": cpus_for(n)}  # fmt: skip
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", _CHILD, json.dumps(arg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    for proc in procs:  # every child has imported everything: start them at once
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    started = time.perf_counter()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    computed = 0
    for proc in procs:
        assert proc.stdout is not None
        computed += json.loads(proc.stdout.readline())["computed"]
    wall = time.perf_counter() - started
    for proc in procs:
        proc.wait(timeout=60)
    if computed != len(symbols) * 100:
        raise SystemExit(f"process pool computed {computed} backtests")
    return wall


def cpus_for(workers: int) -> list[int]:
    """The first ``workers`` cores this process may use (all of them if there are fewer)."""
    return sorted(os.sched_getaffinity(0))[:workers]


def summary(report: SweepReport) -> dict[str, Any]:
    """What the benchmark keeps of a run (a child sends it as JSON)."""
    return {
        "wall_s": report.wall_s,
        "task_s": report.task_s,
        "read_s": report.read_s,
        "compute_s": report.compute_s,
        "write_s": report.write_s,
        "cpu_s": report.cpu_s,
        "tasks": report.tasks,
        "computed": report.computed,
        "save_s": sum(o.save_s for o in report.outcomes),
        "exposed_write_s": report.exposed_write_s,
        "workers": report.workers,
        "metrics": sorted([p.symbol, p.key, dict(p.metrics)] for p in report.points),
    }


def shares(run: dict[str, Any]) -> dict[str, float]:
    total = run["task_s"] or float("nan")
    return {k: run[f"{k}_s"] / total for k in ("read", "compute", "write")}


def exposed_write_share(run: dict[str, Any]) -> float:
    """Waits for result commits that no work overlapped, over the workers' wall time."""
    return float(run["exposed_write_s"] / (run["wall_s"] * run["workers"]))


def save_ms_per_backtest(run: dict[str, Any]) -> float:
    """Wall time of a save on its writer thread (overlapped with the next backtests)."""
    return 1000 * run["save_s"] / max(1, run["computed"])


def ray_run(root: Path, symbols: list[str], timeframe: str, workers: int) -> dict[str, Any]:
    """One Ray sweep with ``workers`` workers, in a fresh driver confined to as many cores."""
    arg = {"root": str(root), "symbols": symbols, "timeframe": timeframe, "workers": workers}
    out = subprocess.run(
        [sys.executable, __file__, "--ray-child", json.dumps(arg)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the {workers}-worker run failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def ray_child(arg: dict[str, Any]) -> None:
    workers = int(arg["workers"])
    os.sched_setaffinity(0, cpus_for(workers))  # Ray's processes, started below, inherit it
    root, symbols = Path(arg["root"]), list(arg["symbols"])
    with connect(num_cpus=workers), SweepWorkers(workers) as pool:
        # warm-up: Ray starts the sweep workers (and they import everything) off the clock
        kwargs: dict[str, Any] = {"executor": "ray", "workers": pool}
        one_run(root, symbols[:workers], arg["timeframe"], chunk_size=20, **kwargs)
        report = one_run(root, symbols, arg["timeframe"], **kwargs)
    print(json.dumps(summary(report)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--bars", type=int, default=105_120, help="bars per symbol")
    parser.add_argument("--timeframe", default="5m")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ray-child", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, default=None, help="store directory (default: tmp)")
    parser.add_argument(
        "--simfs",
        metavar="PROFILE",
        default=None,
        help="run on a simulated EFS mount (efsray.simfs) with this latency profile, e.g. efs-gp",
    )
    parser.add_argument(
        "--attr-timeout",
        type=float,
        default=3.0,
        help="with --simfs: seconds the kernel caches attributes and lookups (EFS clients: "
        "acregmin 3 s by default; 0 makes every path lookup a round trip)",
    )
    parser.add_argument(
        "--compare-local",
        action="store_true",
        help="with --simfs: run every Ray configuration on local disk too, interleaved with the "
        "simulated EFS runs (so that the ratio to local disk sees the same machine load)",
    )
    args = parser.parse_args()
    if args.ray_child:
        ray_child(json.loads(args.ray_child))
        return
    if args.simfs:
        from efsray.simfs import SimFSConfig, SimFSProcess

        base = Path(tempfile.mkdtemp(prefix="efsray-bench-simfs-"))
        (base / "mnt").mkdir()
        (base / "backing").mkdir()
        config = SimFSConfig(
            mountpoint=base / "mnt",
            backing=base / "backing",
            profile=args.simfs,
            attr_timeout=args.attr_timeout,
        )
        with SimFSProcess.start(config) as fs:
            medium = (
                f"simulated EFS (efsray.simfs, profile {args.simfs}, attribute cache "
                f"{args.attr_timeout:g} s)"
            )
            run(args, fs.path / "store", medium, server_pid=fs.pid)
        shutil.rmtree(base, ignore_errors=True)
    else:
        run(args, args.root, "local disk")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    args: argparse.Namespace, root_arg: Path | None, medium: str, server_pid: int | None = None
) -> None:
    workers = [int(w) for w in args.workers.split(",")]
    root = root_arg or Path(tempfile.mkdtemp(prefix="efsray-bench-sweep-"))
    store = Store(root)
    names = [f"S{i:02d}" for i in range(args.symbols)]
    load_at_start = os.getloadavg()[0]
    local_root = None
    if server_pid is not None and args.compare_local:
        local_root = Path(tempfile.mkdtemp(prefix="efsray-bench-sweep-local-"))
    print(f"generating {args.symbols} symbols x {args.bars:,} {args.timeframe} bars in {root}")
    for symbol, table in generate_market(
        names, timeframe=args.timeframe, bars=args.bars, seed=11
    ).items():
        store.market.write(symbol, args.timeframe, table)
        if local_root is not None:
            Store(local_root).market.write(symbol, args.timeframe, table)

    print("reference: one process, no Ray")
    reference = one_run(root, names, args.timeframe, executor="local")
    expected = summary(reference)["metrics"]
    files_per_backtest = result_files(root) / reference.expected_points
    runs: dict[int, list[dict[str, Any]]] = {w: [] for w in workers}
    local_runs: dict[int, list[dict[str, Any]]] = {w: [] for w in workers}
    pool: dict[int, list[float]] = {w: [] for w in workers}
    loads: list[float] = []
    for repeat in range(args.repeats):
        for w in workers:
            pool[w].append(process_pool_run(root, names, args.timeframe, w))
            print(f"  run {repeat + 1}: {w} plain process(es) {pool[w][-1]:6.2f} s")
            server_cpu = process_cpu_s(server_pid) if server_pid else 0.0
            result = ray_run(root, names, args.timeframe, w)
            result["server_cpu_s"] = (process_cpu_s(server_pid) - server_cpu) if server_pid else 0.0
            # through JSON on both sides: NaN metrics compare as their text
            if json.dumps(result["metrics"]) != json.dumps(expected):
                raise SystemExit(f"{w} workers gave other results than one process")
            runs[w].append(result)
            if local_root is not None:
                local = ray_run(local_root, names, args.timeframe, w)
                if json.dumps(local["metrics"]) != json.dumps(expected):
                    raise SystemExit(f"{w} workers on local disk gave other results")
                local_runs[w].append(local)
                print(f"  run {repeat + 1}: {w} worker(s) on local disk {local['wall_s']:6.2f} s")
            loads.append(os.getloadavg()[0])
            print(
                f"  run {repeat + 1}: {w} worker(s) on {len(cpus_for(w))} core(s) "
                f"{result['wall_s']:6.2f} s "
                f"{reference.expected_points / result['wall_s']:7.1f} backtests/s "
                f"(reads {shares(result)['read']:.1%} of task time)"
            )

    points = reference.expected_points
    base = median([r["wall_s"] for r in runs[workers[0]]])
    pool_base = median(pool[workers[0]])
    rows = []
    for w in workers:
        wall = median([r["wall_s"] for r in runs[w]])
        pool_wall = median(pool[w])
        share = {k: median([shares(r)[k] for r in runs[w]]) for k in ("read", "compute", "write")}
        rows.append(
            {
                "workers": w,
                "wall_s": round(wall, 3),
                "wall_s_runs": [round(r["wall_s"], 3) for r in runs[w]],
                "cores": len(cpus_for(w)),
                "backtests_per_s": round(points / wall, 1),
                "speedup_vs_1": round(base / wall, 3),
                "task_time_share": {k: round(v, 4) for k, v in share.items()},
                "exposed_write_share_of_wall": round(
                    median([exposed_write_share(r) for r in runs[w]]), 4
                ),
                "tasks": runs[w][0]["tasks"],
                "save_ms_per_backtest": round(
                    median([save_ms_per_backtest(r) for r in runs[w]]), 3
                ),
                "task_cpu_ms_per_backtest": round(
                    1000 * median([r["cpu_s"] for r in runs[w]]) / points, 3
                ),
                "cpu_share_of_workers": round(
                    median([r["cpu_s"] / (r["wall_s"] * len(cpus_for(w))) for r in runs[w]]), 3
                ),
                "compute_ms_per_backtest": round(
                    1000 * median([r["compute_s"] for r in runs[w]]) / points, 3
                ),
                "server_cpu_share": round(
                    median([r["server_cpu_s"] / (r["wall_s"] * len(cpus_for(w))) for r in runs[w]]),
                    4,
                ),
                "local_disk_wall_s": (
                    round(median([r["wall_s"] for r in local_runs[w]]), 3)
                    if local_runs[w]
                    else None
                ),
                "local_disk_wall_s_runs": [round(r["wall_s"], 3) for r in local_runs[w]],
                "backtests_per_s_vs_local_disk": (
                    round(median([r["wall_s"] for r in local_runs[w]]) / wall, 3)
                    if local_runs[w]
                    else None
                ),
                "plain_processes_wall_s": round(pool_wall, 3),
                "plain_processes_wall_s_runs": [round(x, 3) for x in pool[w]],
                "plain_processes_speedup_vs_1": round(pool_base / pool_wall, 3),
                "ray_speedup_over_plain_speedup": round((base / wall) / (pool_base / pool_wall), 3),
            }
        )
    ref_share = shares(summary(reference))
    two = next((r for r in rows if r["workers"] == 2), rows[-1])
    goals = {
        "backtests_per_s_vs_local_disk_min": min(
            (r["backtests_per_s_vs_local_disk"] or 0.0 for r in rows), default=0.0
        )
        if local_root is not None
        else None,
        "backtests_per_s_vs_local_disk_goal": 0.9,
        "exposed_write_share_max": max(r["exposed_write_share_of_wall"] for r in rows),
        "exposed_write_share_goal": 0.05,
        "speedup_2_workers": two["speedup_vs_1"],
        "speedup_2_workers_goal": 1.8,
        "plain_processes_speedup_2": two["plain_processes_speedup_vs_1"],
        "read_share_max": max(r["task_time_share"]["read"] for r in rows),
        "read_share_goal": 0.10,
    }
    payload = {
        "medium": medium,
        "symbols": args.symbols,
        "parameter_sets": points // args.symbols,
        "backtests_per_run": points,
        "bars_per_symbol": args.bars,
        "timeframe": args.timeframe,
        "repeats": args.repeats,
        "result_files_per_backtest": round(files_per_backtest, 3),
        "load_average": {
            "start": round(load_at_start, 2),
            "runs_median": round(median(loads), 2),
            "runs_max": round(max(loads), 2),
            "end": round(os.getloadavg()[0], 2),
        },
        "reference_single_process": {
            "wall_s": round(reference.wall_s, 3),
            "backtests_per_s": round(points / reference.wall_s, 1),
            "task_time_share": {k: round(v, 4) for k, v in ref_share.items()},
            "exposed_write_share_of_wall": round(exposed_write_share(summary(reference)), 4),
        },
        "ray": rows,
        "goals": goals,
        "results_identical_to_single_process": True,
    }
    md = [
        "# Sweep benchmark",
        "",
        f"{args.symbols} symbols x {points // args.symbols} parameter sets = {points} backtests "
        f"per run, {args.bars:,} {args.timeframe} bars per symbol, median of {args.repeats} "
        f"interleaved runs, store on {medium}, {os.cpu_count()}-core machine. N workers: a "
        "fresh driver and local Ray of N CPUs confined to N cores (all cores when N exceeds "
        "them). Every run recomputes everything and its results equal the single-process "
        "reference exactly.",
        "",
        "| workers | cores | wall (s) | backtests/s | vs 1 worker | plain processes: wall (s), "
        "vs 1 | reads | compute | final writes | writes exposed, of wall | save ms (overlapped) "
        "| CPU ms/backtest | CPU got |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["task_time_share"]
        md.append(
            f"| {r['workers']} | {r['cores']} | {r['wall_s']:.2f} | {r['backtests_per_s']:.1f} | "
            f"{r['speedup_vs_1']:.2f}x | {r['plain_processes_wall_s']:.2f}, "
            f"{r['plain_processes_speedup_vs_1']:.2f}x | {s['read']:.1%} | "
            f"{s['compute']:.1%} | {s['write']:.1%} | "
            f"{r['exposed_write_share_of_wall']:.1%} | {r['save_ms_per_backtest']:.2f} | "
            f"{r['task_cpu_ms_per_backtest']:.2f} | "
            f"{r['cpu_share_of_workers']:.0%} |"
        )
    if server_pid is not None:
        md += [
            "",
            "| workers | compute ms/backtest | simfs server CPU, of wall x cores "
            "| local disk, same run: wall (s) | backtests/s vs local disk |",
            "|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            vs = r["backtests_per_s_vs_local_disk"]
            md.append(
                f"| {r['workers']} | {r['compute_ms_per_backtest']:.2f} | "
                f"{r['server_cpu_share']:.1%} | "
                f"{r['local_disk_wall_s'] if vs is not None else '-'} | "
                f"{f'{vs:.0%}' if vs is not None else '-'} |"
            )
        md += [
            "",
            "Compute ms/backtest: wall time of the backtests per backtest (CPU contention shows "
            "here). Simfs server CPU: the simulator's own CPU time (a Python FUSE server on the "
            "same cores as the workers, which a real EFS server is not). Local disk, same run: "
            "the same Ray configuration on a local-disk store, interleaved with these runs "
            "(`--compare-local`).",
        ]
    ref = payload["reference_single_process"]
    md += [
        "",
        f"Single process without Ray: {ref['wall_s']:.2f} s, {ref['backtests_per_s']:.1f} "
        f"backtests/s (reads {ref_share['read']:.1%} of the time, writes exposed "
        f"{ref['exposed_write_share_of_wall']:.1%}: a task waits for its last commit).",
        "",
        f"Results: committed in batches to the strategy's results table (a segment, a "
        f"sidecar with the equity curves of 250 points, a manifest): {files_per_backtest:.2f} "
        "files per backtest. Reads: "
        "finding the results a task already has (by id) and reading its bars. Final writes: "
        "a task waiting for its last saves after its last backtest (share of summed task "
        "time). Writes exposed: the part of those waits during which the task's worker "
        "computed nothing else (no other task's backtests overlapped it), over wall time x "
        "workers: the time the sweep lost to result writes. Save ms (overlapped): the wall time "
        "of one save on the worker's committer thread, while backtests computed.",
        "",
        "CPU ms/backtest: CPU time the tasks used per backtest (flat across rows: Ray adds no "
        "work per backtest). CPU got: that CPU time over wall time x cores, i.e. how much of "
        "its cores the sweep's workers used (the rest: Ray's own processes, the driver, "
        "waits).",
        "",
        "Plain processes: the same work split over N OS processes without Ray (local sweeps of "
        "1/N of the symbols each, started together, confined to the same cores), in the same "
        "run: the scaling the machine offered at that moment (load average "
        f"{load_at_start:.1f} at the start, median {median(loads):.1f} and at most "
        f"{max(loads):.1f} after the Ray runs, {os.getloadavg()[0]:.1f} at the end).",
        "",
        f"Goals: result writes exposed <= 5% of wall time: "
        f"**{goals['exposed_write_share_max']:.1%}** at most; "
        f"2 workers >= 1.8x one worker: **{goals['speedup_2_workers']:.2f}x** "
        f"(plain processes: {goals['plain_processes_speedup_2']:.2f}x); "
        f"store reads <= 10% of task time: **{goals['read_share_max']:.1%}** at most"
        + (
            f"; backtests/s within 10% of local disk: "
            f"**{goals['backtests_per_s_vs_local_disk_min']:.0%}** of it at least."
            if goals["backtests_per_s_vs_local_disk_min"] is not None
            else "."
        ),
        "",
        "Command: `python bench/sweep.py " + " ".join(sys.argv[1:]) + "`",
    ]
    name = "sweep" if args.simfs is None else f"sweep_simfs_{args.simfs.replace('-', '_')}"
    out = write_results(name, payload, "\n".join(md))
    print("\n".join(md))
    print(f"wrote {out}")
    if root_arg is None:
        shutil.rmtree(root, ignore_errors=True)
    if local_root is not None:
        shutil.rmtree(local_root, ignore_errors=True)


if __name__ == "__main__":
    main()
