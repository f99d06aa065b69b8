"""Shared by the benchmarks: timing, disk usage, and writing results next to this file."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = func()
    return time.perf_counter() - start, value


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms_cell(seconds: float | None) -> str:
    """A time as a table cell in milliseconds ("-" when there is none)."""
    return "-" if seconds is None else f"{seconds * 1e3:,.1f}"


def disk_bytes(path: Path) -> int:
    """Allocated bytes under ``path`` (what `du` reports), not apparent sizes; a file with
    several names (hard links: efsray's redirects of a merge) counted once, as `du` does."""
    total = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def machine() -> dict[str, Any]:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return "n/a"

    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "git": version(["git", "rev-parse", "--short", "HEAD"]),
        "load_average": os.getloadavg(),
    }


def write_results(
    name: str, payload: dict[str, Any], markdown: str, directory: Path = RESULTS
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    out = directory / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (directory / f"{name}.md").write_text(markdown.rstrip() + "\n")
    return out


def add_output_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """--name, --results-dir, --no-write: where :func:`emit` writes the results."""
    parser.add_argument("--name", default=name, help=f"results file name (default: {name})")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="default: bench/results")
    parser.add_argument("--no-write", action="store_true", help="print only")


def emit(args: argparse.Namespace, result: dict[str, Any], markdown: str) -> None:
    """Print the markdown; write both files unless --no-write."""
    print(markdown)
    if not args.no_write:
        out = write_results(args.name, result, markdown, args.results_dir)
        print(f"\nwritten to {out}")
