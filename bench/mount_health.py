"""What the never-hang guarantee costs: a health check in a deadline child vs. the same probe
called in-process (the seed's way, which blocks forever on a hung mount).

Both run side by side, interleaved, on the same directory, in the same run; medians are
reported, and the ratio child/in-process. Also measures `efsray health` end to end (a new
Python process for the CLI, then the probe child), which is what a container healthcheck pays.

    PYTHONPATH=src python bench/mount_health.py [--runs 40] [--dir PATH]

Writes bench/results/mount_health.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from efsray.mount._probe import probe
from efsray.mount.health import check_health

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--cli-runs", type=int, default=10)
    parser.add_argument("--dir", type=Path, default=None, help="directory to probe (default: tmp)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        target = str(args.dir or tmp)
        inproc, child, cli = [], [], []
        for _ in range(args.runs):  # interleaved, so machine noise hits both alike
            inproc.append(_timed(lambda: probe(target)))
            child.append(_timed(lambda: check_health(target, timeout=30)))
        cmd = [sys.executable, "-m", "efsray.cli.app", "health", "--timeout", "30", target]
        for _ in range(args.cli_runs):
            cli.append(_timed(lambda: subprocess.run(cmd, check=True, capture_output=True)))
    med = {name: statistics.median(v) for name, v in
           (("in_process_ms", inproc), ("deadline_child_ms", child), ("cli_ms", cli))}  # fmt: skip
    result = {
        "benchmark": "mount_health",
        "directory": "tmp (local ext4)" if args.dir is None else str(args.dir),
        "runs": args.runs,
        "cli_runs": args.cli_runs,
        "median": {k: round(v, 2) for k, v in med.items()},
        "ratio_child_vs_in_process": round(med["deadline_child_ms"] / med["in_process_ms"], 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "command": "PYTHONPATH=src python bench/mount_health.py " + " ".join(sys.argv[1:]),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mount_health.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "mount_health.md").write_text(
        "# Health check cost: deadline child vs in-process probe\n\n"
        f"Median of {args.runs} interleaved runs on {result['directory']}, "
        f"{result['cpus']} CPUs, Python {result['python']}.\n\n"
        "| variant | median ms |\n|---|---|\n"
        f"| probe in-process (seed; hangs on a hung mount) | {med['in_process_ms']:.2f} |\n"
        f"| `check_health()` (deadline child, never hangs) | {med['deadline_child_ms']:.2f} |\n"
        f"| `efsray health` end to end ({args.cli_runs} runs) | {med['cli_ms']:.2f} |\n\n"
        f"Ratio child / in-process: {result['ratio_child_vs_in_process']}x. The difference is "
        "the child Python's start-up; it is paid once per check (every 30 s in a healthcheck), "
        "not per store operation.\n\nCommand: `" + result["command"] + "`\n"
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
