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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, write_results
from bench._sweep_procs import GRID, ceiling_run, cpus_for, forget_results, process_pool_run
from bench._sweep_report import Runs, report, shares
from efsray.backtest import BacktestConfig, generate_market
from efsray.cluster import connect
from efsray.cluster.sweep import SweepReport, run_sweep
from efsray.cluster.worker import SweepWorkers
from efsray.store import Store


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
        # waits for commits that no work overlapped, and the wait for the workers' last
        # merges after the last task (every worker idle meanwhile)
        "exposed_write_s": report.exposed_write_s + report.drain_s * report.workers,
        "drain_s": report.drain_s,
        "tail_idle_s": tail_idle_s(report),
        "workers": report.workers,
        "metrics": sorted([p.symbol, p.key, dict(p.metrics)] for p in report.points),
    }


def tail_idle_s(report: SweepReport) -> float:
    """Summed over the workers, the time from a worker's last task's end to the last task's
    end of the sweep: cores left idle at the end because the work did not split evenly."""
    last: dict[int, float] = {}
    for o in report.outcomes:
        last[o.pid] = max(last.get(o.pid, 0.0), o.ended_at)
    if not last:
        return 0.0
    end = max(last.values())
    return sum(end - t for t in last.values())


def ray_run(
    root: Path, symbols: list[str], timeframe: str, workers: int, server_pid: int | None = None
) -> dict[str, Any]:
    """One Ray sweep with ``workers`` workers, in a fresh driver confined to as many cores."""
    arg = {"root": str(root), "symbols": symbols, "timeframe": timeframe, "workers": workers,
           "server_pid": server_pid}  # fmt: skip
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
    server = arg.get("server_pid")
    with connect(num_cpus=workers), SweepWorkers(workers) as pool:
        # warm-up: Ray starts the sweep workers (and they import everything) off the clock
        kwargs: dict[str, Any] = {"executor": "ray", "workers": pool}
        one_run(root, symbols[:workers], arg["timeframe"], chunk_size=20, **kwargs)
        server_cpu = process_cpu_s(server) if server else 0.0
        timed = one_run(root, symbols, arg["timeframe"], **kwargs)
        # the simulator's CPU during the timed run only (not Ray's start or the warm-up)
        server_cpu = (process_cpu_s(server) - server_cpu) if server else 0.0
    if arg.get("timeline"):  # every task's span on its worker, for a closer look
        spans = [
            {"task": o.task_key, "pid": o.pid, "start": o.started_at, "end": o.ended_at,
             "read_s": o.read_s, "compute_s": o.compute_s, "write_s": o.write_s,
             "save_s": o.save_s, "exposed_s": o.exposed_write_s, "cpu_s": o.cpu_s}
            for o in timed.outcomes
        ]  # fmt: skip
        Path(arg["timeline"]).write_text(json.dumps(spans))
    print(json.dumps({**summary(timed), "server_cpu_s": server_cpu}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--bars", type=int, default=105_120, help="bars per symbol")
    parser.add_argument("--timeframe", default="5m")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ray-child", help=argparse.SUPPRESS)
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where to write")
    parser.add_argument("--name", default=None, help="results file name (default: by medium)")
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
    runs = Runs(workers)
    for repeat in range(args.repeats):
        for w in workers:
            ceiling = ceiling_run(local_root or root, names, args.timeframe, w)
            runs.ceiling[w].append(ceiling)
            print(f"  run {repeat + 1}: ceiling, {w} process(es) {ceiling['wall_s']:6.2f} s")
            runs.plain[w].append(process_pool_run(root, names, args.timeframe, w))
            print(f"  run {repeat + 1}: {w} plain process(es) {runs.plain[w][-1]:6.2f} s")
            result = ray_run(root, names, args.timeframe, w, server_pid)
            # through JSON on both sides: NaN metrics compare as their text
            if json.dumps(result["metrics"]) != json.dumps(expected):
                raise SystemExit(f"{w} workers gave other results than one process")
            runs.ray[w].append(result)
            if local_root is not None:
                local = ray_run(local_root, names, args.timeframe, w)
                if json.dumps(local["metrics"]) != json.dumps(expected):
                    raise SystemExit(f"{w} workers on local disk gave other results")
                runs.local[w].append(local)
                print(f"  run {repeat + 1}: {w} worker(s) on local disk {local['wall_s']:6.2f} s")
            runs.loads.append(os.getloadavg()[0])
            print(
                f"  run {repeat + 1}: {w} worker(s) on {len(cpus_for(w))} core(s) "
                f"{result['wall_s']:6.2f} s "
                f"{reference.expected_points / result['wall_s']:7.1f} backtests/s "
                f"(reads {shares(result)['read']:.1%} of task time)"
            )

    payload, md = report(
        args, runs, summary(reference), medium=medium, simfs=server_pid is not None,
        compare_local=local_root is not None, files_per_backtest=files_per_backtest,
        load_at_start=load_at_start,
    )  # fmt: skip
    name = args.name or (
        "sweep" if args.simfs is None else f"sweep_simfs_{args.simfs.replace('-', '_')}"
    )
    out = write_results(name, payload, md, args.results_dir)
    print(md)
    print(f"wrote {out}")
    if root_arg is None:
        shutil.rmtree(root, ignore_errors=True)
    if local_root is not None:
        shutil.rmtree(local_root, ignore_errors=True)


if __name__ == "__main__":
    main()
