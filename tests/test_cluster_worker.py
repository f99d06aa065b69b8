"""Sweep workers (efsray.cluster.worker): a task computes while another's batches commit,
and a worker killed at any instant loses nothing it reported done."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from efsray.backtest import generate_market
from efsray.cluster.journal import SweepJournal, sweep_result_ids
from efsray.cluster.sweep import prepare_sweep, run_sweep
from efsray.cluster.worker import SweepWorker, SweepWorkers, WorkerPipeline
from efsray.errors import ConfigError
from tests.test_cluster_sweep import make_store, point_table

REPO = Path(__file__).resolve().parents[1]
SWEEP = {"timeframe": "1h", "strategy": "ma_crossover", "grid": "fast=4:12:4,slow=20:60:20"}


@pytest.fixture(scope="module")
def market() -> dict:
    return generate_market(["A", "B", "C", "D"], timeframe="1h", bars=3000, seed=5)


def test_a_wait_that_another_task_overlaps_is_not_exposed() -> None:
    pipeline = WorkerPipeline()
    entered, leave = threading.Event(), threading.Event()

    def compute() -> None:
        with pipeline.computing():
            entered.set()
            leave.wait(30)

    other = threading.Thread(target=compute)
    other.start()
    assert entered.wait(30)
    with pipeline.waiting() as exposed:  # the other task computes all along
        pass
    assert exposed() == 0.0
    leave.set()
    other.join(30)
    with pipeline.waiting() as exposed:  # nothing computes: the whole wait is exposed
        threading.Event().wait(0.001)  # a wait of at least 1 ms (what is measured, not sync)
    assert exposed() >= 0.001
    pipeline.close()


def test_a_worker_commits_on_its_committer_thread_or_in_the_caller(
    tmp_path: Path, market: dict
) -> None:
    """writers=1 (the default): the worker's committer thread commits every task's batches;
    writers=0: the task's own thread does."""
    store = make_store(tmp_path / "s", market)
    kwargs = {**SWEEP, "symbols": "A,B", "chunk_size": 9, "batch_size": 3,
              "hook": "tests.sweep_hooks:note_thread"}  # fmt: skip
    plan = prepare_sweep(str(store.root), kwargs)
    worker = SweepWorker()
    inline = dataclasses.replace(plan.tasks[1], writers=0)
    outcomes = [worker.run(plan.tasks[0]), worker.run(inline)]
    worker.close()
    assert [o.computed for o in outcomes] == [9, 9]
    threads = (tmp_path / "threads").read_text().split()
    assert len(threads) == 6 and len(set(threads[:3])) == 1
    assert threads[0].startswith("efsray-commit") and threads[3:] == ["MainThread"] * 3


def test_a_worker_merges_on_its_merger_thread_and_drain_waits_for_it(
    tmp_path: Path, market: dict, caplog: pytest.LogCaptureFixture
) -> None:
    """The tasks' commits do not merge: the worker's merger thread does, and ``drain``
    returns once it has merged everything the commits asked for."""
    store = make_store(tmp_path / "s", market)
    kwargs = {**SWEEP, "symbols": "A,B,C,D", "chunk_size": 9, "batch_size": 3}
    plan = prepare_sweep(str(store.root), kwargs)
    worker = SweepWorker()
    with caplog.at_level(logging.DEBUG, logger="efsray.store"):
        outcomes = [worker.run(spec) for spec in plan.tasks]
        worker.drain()
    assert sum(o.computed for o in outcomes) == 36  # 12 batches of 3
    merges = [r for r in caplog.records if r.getMessage().startswith("merged ")]
    assert merges and {r.threadName.split("_")[0] for r in merges} == {"efsray-merge"}
    assert store.results.merge("ma_crossover") == 0  # nothing was left to merge
    segments = store.results.table("ma_crossover").manifest().segments  # type: ignore[union-attr]
    assert len(segments) < 12 and sum(s.rows for s in segments) == 36
    worker.close()


CHILD = """
import json, sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from efsray.cluster.sweep import prepare_sweep
from efsray.cluster.worker import SweepWorker
root, kwargs = sys.argv[1], json.loads(sys.argv[2])
plan = prepare_sweep(root, kwargs)
worker = SweepWorker()
with ThreadPoolExecutor(2) as calls:  # as a Ray actor with max_concurrency=2 runs them
    futures = [calls.submit(worker.run, spec) for spec in plan.tasks]
    for future in as_completed(futures):  # reported done, as Ray would return it
        outcome = future.result()
        print(json.dumps({p.result_id: p.metrics for p in outcome.points}), flush=True)
"""


@pytest.mark.parametrize("kill_at", [2, 5, 8])
def test_a_killed_worker_loses_nothing_it_reported_done(
    tmp_path: Path, market: dict, kill_at: int
) -> None:
    """A worker process runs four tasks two at a time (three batches each) and is SIGKILLed
    just before its committer commits batch ``kill_at``, while its other task computes or
    waits: every result it reported is stored and equal; a re-run completes the sweep with
    each point stored once, equal to a clean run."""
    store = make_store(tmp_path / "s", market)
    kwargs = {**SWEEP, "symbols": "A,B,C,D", "chunk_size": 9, "batch_size": 3,
              "hook": "tests.sweep_hooks:kill_at_batch"}  # fmt: skip
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "EFSRAY_TEST_KILL_AT_BATCH": str(kill_at)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(store.root), json.dumps(kwargs)],
        capture_output=True, text=True, timeout=300, env={**_base_env(), **env},
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    reported: dict[str, dict] = {}
    for line in proc.stdout.splitlines():
        reported.update(json.loads(line))
    stored = store.results.infos("ma_crossover", list(reported))
    assert set(stored) == set(reported)
    for run_id, metrics in reported.items():
        assert json.dumps(stored[run_id].metrics) == json.dumps(metrics)  # NaN as text
    # batches before the killed one are committed (FIFO committer); nothing after it is
    plan = prepare_sweep(str(store.root), kwargs)
    definition = SweepJournal(store).read_spec(plan.sweep_id)
    all_ids = sweep_result_ids(definition, plan.sweep_id)
    assert len(store.results.infos("ma_crossover", all_ids)) == 3 * (kill_at - 1)

    kwargs.pop("hook")
    again = run_sweep(store.root, executor="local", **kwargs)
    assert again.ok and again.reused == 3 * (kill_at - 1) and again.computed == 36 - again.reused
    frame = store.results.query("ma_crossover", tags={"sweep": again.sweep_id})
    assert sorted(frame["run_id"]) == sorted(p.result_id for p in again.points)
    clean = run_sweep(make_store(tmp_path / "clean", market).root, executor="local", **kwargs)
    assert point_table(clean.points) == point_table(again.points)


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_workers_are_ray_workers(tmp_path: Path, market: dict) -> None:
    with pytest.raises(ConfigError, match="executor='ray'"):
        run_sweep(tmp_path, executor="local", symbols="A", workers=object(), **SWEEP)  # type: ignore[arg-type]


@pytest.mark.ray
def test_a_pool_of_workers_serves_sweeps_and_a_killed_one_resumes(
    ray_cluster, tmp_path: Path, market: dict
) -> None:
    """One sweep worker, two tasks in flight: it is SIGKILLed while committing the first
    task's batches and the second task is in flight; Ray restarts it, both tasks resume,
    and the results equal a clean run's. The same pool then runs another sweep."""
    store = make_store(tmp_path / "s", market)
    kwargs = {**SWEEP, "symbols": "A,B", "chunk_size": 9, "batch_size": 3}
    with pytest.raises(ConfigError, match="count must be an integer >= 1"):
        SweepWorkers(0)
    with SweepWorkers(1) as pool:
        report = run_sweep(
            store.root, executor="ray", workers=pool, hook="tests.sweep_hooks:kill_mid_write",
            **kwargs,
        )  # fmt: skip
        marker = json.loads((tmp_path / "killed-mid-write").read_text())
        assert report.ok, report.failures
        assert report.retried[marker["task"]] == 2 and set(report.retried) <= {"A.0", "B.0"}
        assert len({o.pid for o in report.outcomes} | {marker["pid"]}) >= 2
        again = run_sweep(store.root, executor="ray", workers=pool, **kwargs)
        assert again.ok and again.computed == 0 and again.reused == 18
    frame = store.results.query("ma_crossover", tags={"sweep": report.sweep_id})
    assert sorted(frame["run_id"]) == sorted(p.result_id for p in report.points)
    clean = run_sweep(make_store(tmp_path / "clean", market).root, executor="local", **kwargs)
    assert point_table(clean.points) == point_table(report.points)


def test_workers_need_ray() -> None:
    """In a fresh process (this one may hold the session cluster's connection)."""
    code = "from efsray.cluster.worker import SweepWorkers\nSweepWorkers(1)"
    env = {**_base_env(), "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode != 0
    assert "sweep workers need a Ray connection" in proc.stderr
