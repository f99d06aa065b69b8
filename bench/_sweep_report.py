"""The sweep benchmark's figures: medians per configuration, the goals, and the Markdown
report (``bench/sweep.py`` measures, this module sums up)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from bench._common import median
from bench._sweep_procs import cpus_for

__all__ = ["Runs", "report", "shares"]


@dataclass
class Runs:
    """Every measured run, by worker count."""

    workers: list[int]
    ray: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # store under test
    local: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # --compare-local
    plain: dict[int, list[float]] = field(default_factory=dict)  # local sweeps, no Ray
    ceiling: dict[int, list[dict[str, float]]] = field(default_factory=dict)  # backtests only
    loads: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        for books in (self.ray, self.local, self.plain, self.ceiling):
            books.update({w: [] for w in self.workers})


def shares(run: dict[str, Any]) -> dict[str, float]:
    total = run["task_s"] or float("nan")
    return {k: run[f"{k}_s"] / total for k in ("read", "compute", "write")}


def _of_workers(run: dict[str, Any], key: str) -> float:
    """A run's summed seconds of ``key`` over its wall time x workers."""
    return float(run[key] / (run["wall_s"] * run["workers"]))


def _med(runs: list[dict[str, Any]], func: Any) -> float:
    return median([func(r) for r in runs])


def _row(w: int, runs: Runs, points: int, base: float) -> dict[str, Any]:
    ray, local, cores = runs.ray[w], runs.local[w], len(cpus_for(w))
    wall = _med(ray, lambda r: r["wall_s"])
    ceiling = median([c["wall_s"] for c in runs.ceiling[w]])
    ceiling_base = median([c["wall_s"] for c in runs.ceiling[runs.workers[0]]])
    plain, plain_base = median(runs.plain[w]), median(runs.plain[runs.workers[0]])
    local_wall = _med(local, lambda r: r["wall_s"]) if local else None
    row: dict[str, Any] = {
        "workers": w,
        "cores": cores,
        "wall_s": round(wall, 3),
        "wall_s_runs": [round(r["wall_s"], 3) for r in ray],
        "backtests_per_s": round(points / wall, 1),
        "speedup_vs_1": round(base / wall, 3),
        "ceiling_wall_s": round(ceiling, 3),
        "ceiling_wall_s_runs": [round(c["wall_s"], 3) for c in runs.ceiling[w]],
        "ceiling_speedup_vs_1": round(ceiling_base / ceiling, 3),
        "ceiling_cpu_ms_per_backtest": round(
            1000 * median([c["cpu_s"] for c in runs.ceiling[w]]) / points, 3
        ),
        "speedup_of_ceiling_speedup": round((base / wall) / (ceiling_base / ceiling), 3),
        # ratios of the runs made one after the other (a repeat's), then their median: the
        # load of a shared machine drifts between repeats more than within one
        "backtests_per_s_of_ceiling": round(
            median([c["wall_s"] / r["wall_s"] for c, r in zip(runs.ceiling[w], ray, strict=True)]),
            3,
        ),
        "task_time_share": {
            k: round(_med(ray, lambda r, k=k: shares(r)[k]), 4)
            for k in ("read", "compute", "write")
        },
        "exposed_write_share_of_wall": round(
            _med(ray, lambda r: _of_workers(r, "exposed_write_s")), 4
        ),
        "tail_idle_share_of_wall": round(_med(ray, lambda r: _of_workers(r, "tail_idle_s")), 4),
        "tasks": ray[0]["tasks"],
        "save_ms_per_backtest": round(
            _med(ray, lambda r: 1000 * r["save_s"] / max(1, r["computed"])), 3
        ),
        "task_cpu_ms_per_backtest": round(1000 * _med(ray, lambda r: r["cpu_s"]) / points, 3),
        "cpu_share_of_workers": round(_med(ray, lambda r: r["cpu_s"] / (r["wall_s"] * cores)), 3),
        "compute_ms_per_backtest": round(1000 * _med(ray, lambda r: r["compute_s"]) / points, 3),
        "server_cpu_share": round(
            _med(ray, lambda r: r["server_cpu_s"] / (r["wall_s"] * cores)), 4
        ),
        "local_disk_wall_s": round(local_wall, 3) if local_wall is not None else None,
        "local_disk_wall_s_runs": [round(r["wall_s"], 3) for r in local],
        "local_disk_exposed_write_share_of_wall": (
            round(_med(local, lambda r: _of_workers(r, "exposed_write_s")), 4) if local else None
        ),
        "local_disk_tail_idle_share_of_wall": (
            round(_med(local, lambda r: _of_workers(r, "tail_idle_s")), 4) if local else None
        ),
        "backtests_per_s_vs_local_disk": (
            round(median([x["wall_s"] / r["wall_s"] for x, r in zip(local, ray, strict=True)]), 3)
            if local
            else None
        ),
        "plain_processes_wall_s": round(plain, 3),
        "plain_processes_wall_s_runs": [round(x, 3) for x in runs.plain[w]],
        "plain_processes_speedup_vs_1": round(plain_base / plain, 3),
    }
    return row


def report(
    args: argparse.Namespace,
    runs: Runs,
    reference: dict[str, Any],
    *,
    medium: str,
    simfs: bool,
    compare_local: bool,
    files_per_backtest: float,
    load_at_start: float,
) -> tuple[dict[str, Any], str]:
    """The results' JSON payload and Markdown."""
    points = reference["computed"]
    base = median([r["wall_s"] for r in runs.ray[runs.workers[0]]])
    rows = [_row(w, runs, points, base) for w in runs.workers]
    ref_share = shares(reference)
    two = next((r for r in rows if r["workers"] == 2), rows[-1])
    goals = {
        "backtests_per_s_vs_local_disk_min": (
            min(r["backtests_per_s_vs_local_disk"] for r in rows) if compare_local else None
        ),
        "backtests_per_s_vs_local_disk_goal": 0.9,
        "exposed_write_share_max": max(r["exposed_write_share_of_wall"] for r in rows),
        "exposed_write_share_goal": 0.05,
        "speedup_2_workers": two["speedup_vs_1"],
        "speedup_2_workers_goal": 1.8,
        "ceiling_speedup_2": two["ceiling_speedup_vs_1"],
        "speedup_2_workers_of_ceiling": two["speedup_of_ceiling_speedup"],
        "plain_processes_speedup_2": two["plain_processes_speedup_vs_1"],
        "read_share_max": max(r["task_time_share"]["read"] for r in rows),
        "read_share_goal": 0.10,
    }
    loads = {
        "start": round(load_at_start, 2),
        "runs_median": round(median(runs.loads), 2),
        "runs_max": round(max(runs.loads), 2),
        "end": round(os.getloadavg()[0], 2),
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
        "load_average": loads,
        "reference_single_process": {
            "wall_s": round(reference["wall_s"], 3),
            "backtests_per_s": round(points / reference["wall_s"], 1),
            "task_time_share": {k: round(v, 4) for k, v in ref_share.items()},
            "exposed_write_share_of_wall": round(_of_workers(reference, "exposed_write_s"), 4),
        },
        "ray": rows,
        "goals": goals,
        "results_identical_to_single_process": True,
    }
    md = _markdown(args, rows, payload, medium=medium, simfs=simfs)
    return payload, md


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _markdown(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    payload: dict[str, Any],
    *,
    medium: str,
    simfs: bool,
) -> str:
    points, goals, loads = payload["backtests_per_run"], payload["goals"], payload["load_average"]
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
        "| workers | cores | wall (s): median (runs) | backtests/s | vs 1 worker "
        "| machine ceiling: wall (s), vs 1 | vs 1, of the ceiling's | backtests/s, of the "
        "ceiling's | plain processes: wall (s), vs 1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        md.append(
            f"| {r['workers']} | {r['cores']} | {r['wall_s']:.2f} ({_runs(r['wall_s_runs'])}) "
            f"| {r['backtests_per_s']:.1f} | {r['speedup_vs_1']:.2f}x "
            f"| {r['ceiling_wall_s']:.2f}, {r['ceiling_speedup_vs_1']:.2f}x "
            f"| {r['speedup_of_ceiling_speedup']:.0%} | {r['backtests_per_s_of_ceiling']:.0%} "
            f"| {r['plain_processes_wall_s']:.2f}, {r['plain_processes_speedup_vs_1']:.2f}x |"
        )
    md += [
        "",
        "| workers | reads | compute | final writes | writes exposed, of wall | tail idle, of "
        "wall | save ms (overlapped) | CPU ms/backtest | ceiling's CPU ms/backtest | CPU got |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        s = r["task_time_share"]
        md.append(
            f"| {r['workers']} | {s['read']:.1%} | {s['compute']:.1%} | {s['write']:.1%} "
            f"| {r['exposed_write_share_of_wall']:.1%} | {r['tail_idle_share_of_wall']:.1%} "
            f"| {r['save_ms_per_backtest']:.2f} | {r['task_cpu_ms_per_backtest']:.2f} "
            f"| {r['ceiling_cpu_ms_per_backtest']:.2f} | {r['cpu_share_of_workers']:.0%} |"
        )
    if simfs:
        md += [
            "",
            "| workers | compute ms/backtest | simfs server CPU, of wall x cores "
            "| local disk, same run: wall (s): median (runs) | backtests/s vs local disk "
            "| local disk: writes exposed, tail idle |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            vs = r["backtests_per_s_vs_local_disk"]
            local = (
                f"{r['local_disk_wall_s']:.2f} ({_runs(r['local_disk_wall_s_runs'])}) | {vs:.0%} "
                f"| {r['local_disk_exposed_write_share_of_wall']:.1%}, "
                f"{r['local_disk_tail_idle_share_of_wall']:.1%}"
                if vs is not None
                else "- | - | -"
            )
            md.append(
                f"| {r['workers']} | {r['compute_ms_per_backtest']:.2f} | "
                f"{r['server_cpu_share']:.1%} | {local} |"
            )
        md += [
            "",
            "Compute ms/backtest: wall time of the backtests per backtest (CPU contention shows "
            "here). Simfs server CPU: the simulator's own CPU time during the timed runs (a "
            "Python FUSE server on the same cores as the workers, which a real EFS server is "
            "not). Local disk, same run: the same Ray configuration on a local-disk store, "
            "interleaved with these runs (`--compare-local`); backtests/s vs local disk: the "
            "median of the ratios of each repeat's two runs (made one after the other).",
        ]
    ref = payload["reference_single_process"]
    md += [
        "",
        f"Single process without Ray: {ref['wall_s']:.2f} s, {ref['backtests_per_s']:.1f} "
        f"backtests/s (reads {ref['task_time_share']['read']:.1%} of the time, writes exposed "
        f"{ref['exposed_write_share_of_wall']:.1%}: a task waits for its last commit).",
        "",
        "Machine ceiling: N plain processes started together on the same N cores, each running "
        "only the backtests of 1/N of the symbols (bars loaded before the clock starts; no "
        "store, no Ray, no results kept): the speed-up this compute can get from N cores on "
        "this machine at that moment (the cores share caches and memory bandwidth: the CPU "
        "time per backtest rises when both run). \"vs 1, of the ceiling's\": a configuration's "
        "speed-up over the ceiling's; \"backtests/s, of the ceiling's\": its throughput over "
        "the ceiling's with as many cores (the median of the ratios of each repeat's runs, made "
        "one after the other). Plain processes: the same sweep split over N local "
        "sweeps (executor `local`, no Ray), each writing its results to the store under test "
        "on a background thread: Ray's cost shows against it, the store's against the "
        "ceiling; it is not a pure machine figure.",
        "",
        f"Results: committed in batches to the strategy's results table: "
        f"{payload['result_files_per_backtest']:.2f} files per backtest. Reads: finding the "
        "results a task already has (by id) and reading its bars. Final writes: a task waiting "
        "for its last saves after its last backtest (share of summed task time). Writes "
        "exposed: the part of those waits during which the task's worker computed nothing else "
        "(no other task's backtests overlapped it), over wall time x workers: the time the "
        "sweep lost to result writes. Tail idle: summed over the workers, the time from a "
        "worker's last task's end to the sweep's last task's end, over wall time x workers "
        "(the work did not split evenly). Save ms (overlapped): the wall time of one save on "
        "the worker's committer thread, while backtests computed.",
        "",
        "CPU ms/backtest: CPU time the tasks' processes used per backtest (backtests, encoding "
        "and committing results). CPU got: that CPU time over wall time x cores, i.e. how "
        "much of its cores the sweep's workers used (the rest: Ray's own processes, the "
        "driver, the simulator, waits).",
        "",
        f"Load average {loads['start']:.1f} at the start, median {loads['runs_median']:.1f} and "
        f"at most {loads['runs_max']:.1f} after the runs, {loads['end']:.1f} at the end.",
        "",
        f"Goals: result writes exposed <= 5% of wall time: "
        f"**{goals['exposed_write_share_max']:.1%}** at most; "
        f"2 workers >= 1.8x one worker: **{goals['speedup_2_workers']:.2f}x** (the machine "
        f"ceiling: {goals['ceiling_speedup_2']:.2f}x, so "
        f"{goals['speedup_2_workers_of_ceiling']:.0%} of it; plain processes: "
        f"{goals['plain_processes_speedup_2']:.2f}x); "
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
    return "\n".join(md)
