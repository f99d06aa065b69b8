"""Server operations and bytes of the results table's operations, on the simulated EFS.

Counts are deterministic (simfs counts every request the kernel sends it; releases are not
counted, nor the closes of the files the results table keeps open a second after a read,
which come later, off the operation's path: each row starts with none kept but where it
says "at once"; simfs reads in 128 KiB requests where an EFS client reads 1 MiB), so they
are what docs/backtest.md's cost of a 10^6-point sweep on 100 workers is computed from. Runs as a
sweep saves them: 6 metrics, 2 parameters, 3 tags and an equity curve of 250 points each.

    python bench/results_ops.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from bench._common import write_results
from bench.results_scale import STRATEGY, runs_of
from efsray.simfs import SimFSConfig, SimFSProcess
from efsray.store import Store
from efsray.store.results.index import FENCES
from efsray.store.results.open_files import OPEN_FILES
from efsray.store.results.parts import FOOTERS

BATCH = 500


def sweep_runs(batch: int) -> list[dict[str, Any]]:
    curve = pd.DataFrame({"equity": np.linspace(1.0, 1.2, 250)})
    return [{**r, "equity_curve": curve} for r in runs_of(batch, BATCH)]


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="efsray-bench-ops-"))
    (base / "mnt").mkdir()
    (base / "backing").mkdir()
    config = SimFSConfig(mountpoint=base / "mnt", backing=base / "backing", profile="efs-gp",
                         attr_timeout=3.0)  # fmt: skip
    rows: list[dict[str, Any]] = []
    with SimFSProcess.start(config) as fs:

        def count(what: str, func: Any, *, keep_open: bool = False) -> Any:
            if not keep_open:  # files kept open by what came before: closed, uncounted
                OPEN_FILES.clear()
            fs.control.reset()
            value = func()
            c = fs.control.reset()
            rows.append({"operation": what, "ops": c.total(exclude=("release", "releasedir")),
                         "bytes_read": c.bytes_read, "bytes_written": c.bytes_written})  # fmt: skip
            print(rows[-1], flush=True)
            return value

        OPEN_FILES.linger = 3600.0  # kept files closed only where this bench says: exact counts
        store = Store(fs.path / "store")
        results = store.results
        results.merge_after_commit = False
        count("commit a batch of 500 runs (no merge)", lambda: results.save_batch(STRATEGY,
              sweep_runs(0)))  # fmt: skip
        count("the same batch again (a retry: found, compared)", lambda: results.save_batch(
              STRATEGY, sweep_runs(0)))  # fmt: skip
        for b in (1, 2):
            results.save_batch(STRATEGY, sweep_runs(b))
        results.merge_after_commit = True
        count("commit a batch of 500 runs and merge 4 segments into one", lambda: results
              .save_batch(STRATEGY, sweep_runs(3)))  # fmt: skip
        for b in range(4, 40):
            results.save_batch(STRATEGY, sweep_runs(b))
        count("vacuum (grace 0) after 40 batches", lambda: results.vacuum(STRATEGY, grace=0))
        segments = len(results.files(STRATEGY))
        where = ["sharpe>=2.3"]
        cols = ["sharpe", "total_return", "max_drawdown", "params.fast", "params.slow"]
        fresh = Store(fs.path / "store").results
        FOOTERS.clear()
        count(f"query with a filter, new process (20,000 runs, {segments} segments)",
              lambda: fresh.query(STRATEGY, where=where, columns=cols))  # fmt: skip
        count(
            "the same query again at once (manifest and footers cached, segments open)",
            lambda: fresh.query(STRATEGY, where=where, columns=cols),
            keep_open=True,
        )
        count("the same query again, its segments closed first",
              lambda: fresh.query(STRATEGY, where=where, columns=cols))  # fmt: skip
        some = fresh.query(STRATEGY, columns=["sharpe"])["run_id"]
        other = Store(fs.path / "store").results
        FENCES.clear()
        count("load a run by id, new process", lambda: other.load(some[7], strategy=STRATEGY))
        count("load another run by id (manifest and fence cached, sidecar closed)",
              lambda: other.load(some[12_345], strategy=STRATEGY))  # fmt: skip
        count(
            "load a third run by id at once (its sidecar still open)",
            lambda: other.load(some[15_000], strategy=STRATEGY),
            keep_open=True,
        )
        OPEN_FILES.clear()
    shutil.rmtree(base, ignore_errors=True)
    md = ["# Results table: server operations on the simulated EFS", "",
          "Command: `python bench/results_ops.py` (simfs profile efs-gp, attribute cache 3 s; "
          "releases not counted, nor the closes of files kept open a second after a read, "
          "made later off the operation's path; reads in 128 KiB requests). Runs of 6 metrics, "
          "2 params, 3 tags and an equity curve of 250 points.", "",
          "| operation | server ops | bytes read | bytes written |",
          "|---|---:|---:|---:|"]  # fmt: skip
    for r in rows:
        md.append(f"| {r['operation']} | {r['ops']} | {r['bytes_read']:,} | "
                  f"{r['bytes_written']:,} |")  # fmt: skip
    print(write_results("results_ops", {"rows": rows}, "\n".join(md)))


if __name__ == "__main__":
    main()
