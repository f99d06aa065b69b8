"""The distributed backtest sweep: a parameter grid over symbols, fanned out as Ray tasks.

The driver only plans and collects. It opens the store to pin, for every symbol, the latest
market-data version (a manifest read, no bars), expands the grid against the strategy's
rules, and cuts the work into tasks of one symbol and a chunk of parameter sets. Tasks get
paths, names and versions, read their bars from the shared volume themselves, save one run
per grid point with ``store.results`` under an id derived from the sweep and the point (see
:mod:`efsray.cluster.journal`), and return small summaries (see :mod:`efsray.cluster.tasks`).

Tasks run on sweep workers (:class:`efsray.cluster.worker.SweepWorker`, one Ray actor per
CPU, spread over the nodes), two in flight each: one computes while the other's last batches
commit, and a slow node does not hoard work. A task whose worker dies is retried on another
worker (``max_retries``), and so is one that fails with a storage error;
the retry resumes: it saves only the points that have no result yet. A task that still
fails is reported with its error; its points are missing from the report, never silently.
``executor="local"`` runs the same tasks one by one in this process, without Ray: the
reference a distributed run must match exactly.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from efsray.backtest import BacktestConfig, ParamGrid
from efsray.cluster.executors import RETRYABLE, Progress, first_line, run_here, run_on_ray
from efsray.cluster.journal import SweepJournal
from efsray.cluster.plan import SweepPlan, plan_sweep
from efsray.cluster.report import (
    METRICS,
    ParamRanking,
    SweepReport,
    TaskFailure,
    process_cpu_s,
)
from efsray.cluster.report import _mean as _mean  # kept importable from here (tests use it)
from efsray.cluster.worker import SweepWorkers
from efsray.errors import ClusterError, ConfigError, EfsrayError
from efsray.store import Store

__all__ = [
    "METRICS",
    "RETRYABLE",
    "ParamRanking",
    "Progress",
    "SweepPlan",
    "SweepReport",
    "SweepWorkers",
    "TaskFailure",
    "count_attempts",
    "near_the_store",
    "plan_sweep",
    "prepare_sweep",
    "run_sweep",
]

log = logging.getLogger("efsray.cluster")


def run_sweep(
    root: str | Any,
    *,
    symbols: Sequence[str] | str,
    timeframe: str,
    strategy: str,
    grid: ParamGrid | str,
    config: BacktestConfig | None = None,
    executor: Literal["ray", "local"] = "ray",
    max_retries: int = 3,
    chunk_size: int | None = None,
    batch_size: int = 500,
    max_parallel: int | None = None,
    progress: Progress | None = None,
    hook: str | None = None,
    workers: SweepWorkers | None = None,
) -> SweepReport:
    """Run a sweep over the store at ``root``; see the module docstring.

    With ``executor="ray"`` Ray must already be connected (``efsray.cluster.connect``);
    the sweep starts one worker per CPU (``max_parallel`` caps their number), each with two
    tasks in flight, and stops them at the end; or it runs on ``workers`` (started by the
    caller, left running).
    ``batch_size``: results per committed batch (a segment of the results table).
    """
    if executor not in ("ray", "local"):
        raise ConfigError(f"executor must be 'ray' or 'local', got {executor!r}")
    if not isinstance(max_retries, int) or max_retries < 0:
        raise ConfigError(f"max_retries must be an integer >= 0, got {max_retries!r}")
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise ConfigError(f"max_parallel must be an integer >= 1, got {max_parallel!r}")
    started = time.perf_counter()
    if workers is not None and executor != "ray":
        raise ConfigError("workers= are Ray sweep workers: pass them with executor='ray'")
    if executor != "ray":
        parallelism = 1
    elif workers is not None:
        parallelism = len(workers)
    else:
        parallelism = _cluster_cpus()
    if max_parallel is not None:
        parallelism = min(parallelism, max_parallel)
    plan = near_the_store(
        prepare_sweep,
        str(root),
        {
            "symbols": symbols,
            "timeframe": timeframe,
            "strategy": strategy,
            "grid": grid,
            "config": config,
            "parallelism": parallelism,
            "chunk_size": chunk_size,
            "batch_size": batch_size,
            "hook": hook,
        },
    )
    log.info(
        "sweep %s: %s on %d symbols x %d parameter sets = %d backtests in %d tasks",
        plan.sweep_id,
        plan.strategy,
        len(plan.symbols),
        len(plan.points),
        plan.size,
        len(plan.tasks),
    )
    if executor == "ray":
        outcomes, failures, drain_s = run_on_ray(plan, max_retries, parallelism, progress, workers)
    else:
        outcomes, failures = run_here(plan, max_retries, progress)
        drain_s = 0.0
    attempts = near_the_store(count_attempts, plan.root, plan.sweep_id, plan.run_id)
    points = tuple(p for o in outcomes for p in o.points)
    nodes: dict[str, int] = {}
    for o in outcomes:
        nodes[o.node_id] = nodes.get(o.node_id, 0) + 1
    return SweepReport(
        sweep_id=plan.sweep_id,
        run_id=plan.run_id,
        root=plan.root,
        strategy=plan.strategy,
        timeframe=plan.timeframe,
        symbols=plan.symbols,
        versions=dict(plan.versions),
        expected_points=plan.size,
        points=points,
        rejected=plan.rejected,
        failures=tuple(failures),
        tasks=len(plan.tasks),
        retried={k: v for k, v in attempts.items() if v > 1},
        computed=sum(o.computed for o in outcomes),
        reused=sum(o.reused for o in outcomes),
        nodes=nodes,
        read_s=sum(o.read_s for o in outcomes),
        compute_s=sum(o.compute_s for o in outcomes),
        write_s=sum(o.write_s for o in outcomes),
        task_s=sum(o.total_s for o in outcomes),
        wall_s=time.perf_counter() - started,
        executor=executor,
        cpu_s=process_cpu_s(outcomes),
        outcomes=tuple(outcomes),
        exposed_write_s=sum(o.exposed_write_s for o in outcomes),
        workers=parallelism,
        drain_s=drain_s,
    )


def prepare_sweep(root: str, plan_kwargs: Mapping[str, Any]) -> SweepPlan:
    """Open the store, plan the sweep and record its definition (once: a re-run of the same
    sweep gets the first run's creation time, hence the same result ids)."""
    store = Store(root, create=False)
    plan = plan_sweep(store, **plan_kwargs)
    return plan.created(SweepJournal(store).write_spec(plan.sweep_id, plan.definition()))


def count_attempts(root: str, sweep_id: str, run_id: str) -> dict[str, int]:
    """Attempts per task of one run of a sweep."""
    return SweepJournal(Store(root, create=False)).attempts(sweep_id, run_id)


def near_the_store(func: Callable[..., Any], *args: Any) -> Any:
    """Call ``func(*args)`` where the store is mounted.

    That is here, unless this process is a Ray Client (``ray://``): a laptop driving a
    cluster need not mount the cluster's volume, so the call runs as a small task on the
    cluster, and its efsray errors come back as themselves.
    """
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or not ray.util.client.ray.is_connected():
        return func(*args)
    from ray.exceptions import RayTaskError

    task = ray.remote(func).options(num_cpus=0, max_retries=3, name=f"efsray-{func.__name__}")
    try:
        return ray.get(task.remote(*args))
    except RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, EfsrayError):
            raise cause from None
        raise ClusterError(f"{func.__name__} failed on the cluster: {first_line(exc)}") from None


def _cluster_cpus() -> int:
    import ray

    if not ray.is_initialized():
        raise ClusterError(
            "run_sweep(executor='ray') needs a Ray connection: wrap it in "
            "`with efsray.cluster.connect(...)`"
        )
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
