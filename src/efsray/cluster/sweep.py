"""The distributed backtest sweep: a parameter grid over symbols, fanned out as Ray tasks.

The driver only plans and collects. It opens the store to pin, for every symbol, the latest
market-data version (a manifest read, no bars), expands the grid against the strategy's
rules, and cuts the work into tasks of one symbol and a chunk of parameter sets. Tasks get
paths, names and versions, read their bars from the shared volume themselves, save one run
per grid point with ``store.results`` under an id derived from the sweep and the point (see
:mod:`efsray.cluster.journal`), and return small summaries (see :mod:`efsray.cluster.tasks`).

Tasks run on sweep workers (:class:`efsray.cluster.worker.SweepWorker`, one Ray actor per
CPU, spread over the nodes), two in flight each: one computes while the other's last batches
commit, and a slow node does not hoard work. A task whose worker dies is retried by Ray
on the restarted worker (``max_retries``), and so is one that fails with a storage error;
the retry resumes: it saves only the points that have no result yet. A task that still
fails is reported with its error; its points are missing from the report, never silently.
``executor="local"`` runs the same tasks one by one in this process, without Ray: the
reference a distributed run must match exactly.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import math
import secrets
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import tenacity

from efsray.backtest import BacktestConfig, ParamGrid, RejectedPoint, get_strategy, parse_grid
from efsray.backtest.engine import ENGINE_VERSION
from efsray.backtest.timeframe import parse_timeframe
from efsray.cluster.journal import SweepJournal, canonical_json
from efsray.cluster.tasks import PointSummary, TaskOutcome, TaskSpec, run_task
from efsray.cluster.worker import IN_FLIGHT, SweepWorkers
from efsray.errors import (
    ClusterError,
    ConfigError,
    DeadlineExceeded,
    EfsrayError,
    NotFoundError,
    StorageError,
)
from efsray.store import Store

__all__ = [
    "METRICS",
    "ParamRanking",
    "SweepPlan",
    "SweepReport",
    "TaskFailure",
    "plan_sweep",
    "run_sweep",
]

log = logging.getLogger("efsray.cluster")

# metric -> True when higher is better
METRICS: Mapping[str, bool] = {
    "sharpe": True,
    "sortino": True,
    "total_return": True,
    "annualized_return": True,
    "max_drawdown": False,
    "win_rate": True,
}
RETRYABLE = (StorageError, DeadlineExceeded)
Progress = Callable[[int, int, int], None]  # (points done, points total, points failed)


@dataclass(frozen=True, slots=True)
class SweepPlan:
    sweep_id: str
    run_id: str
    root: str
    strategy: str
    timeframe: str
    symbols: tuple[str, ...]
    versions: Mapping[str, int]
    bars: Mapping[str, int]
    points: tuple[Mapping[str, int | float], ...]
    rejected: tuple[RejectedPoint, ...]
    config: BacktestConfig
    tasks: tuple[TaskSpec, ...]
    created_at: str = ""  # recorded once per sweep (prepare_sweep): the time of its run ids

    @property
    def size(self) -> int:
        return len(self.points) * len(self.symbols)

    def definition(self) -> dict[str, Any]:
        """What determines the results (hashed into the sweep id, stored in sweep.json)."""
        return {
            "engine": ENGINE_VERSION,
            "strategy": self.strategy,
            "timeframe": self.timeframe,
            "config": self.config.to_dict(),
            "market": {s: self.versions[s] for s in self.symbols},
            "points": [dict(p) for p in self.points],
        }

    def created(self, created_at: dt.datetime) -> SweepPlan:
        """This plan with the sweep's recorded creation time (in every task too)."""
        stamp = created_at.isoformat()
        tasks = tuple(dataclasses.replace(t, created_at=stamp) for t in self.tasks)
        return dataclasses.replace(self, created_at=stamp, tasks=tasks)


@dataclass(frozen=True, slots=True)
class TaskFailure:
    task_key: str
    symbol: str
    points: int
    error: str


@dataclass(frozen=True, slots=True)
class ParamRanking:
    """A parameter set's metrics averaged over the symbols it ran on."""

    rank: int
    key: str
    params: Mapping[str, int | float]
    symbols: int
    sharpe: float
    sortino: float
    total_return: float
    annualized_return: float
    max_drawdown: float
    win_rate: float
    trades: int


@dataclass(frozen=True, slots=True)
class SweepReport:
    sweep_id: str
    run_id: str
    root: str
    strategy: str
    timeframe: str
    symbols: tuple[str, ...]
    versions: Mapping[str, int]
    expected_points: int
    points: tuple[PointSummary, ...]
    rejected: tuple[RejectedPoint, ...]
    failures: tuple[TaskFailure, ...]
    tasks: int
    retried: Mapping[str, int]  # task key -> attempts, for tasks that needed more than one
    computed: int
    reused: int
    nodes: Mapping[str, int]  # node id -> tasks completed there
    read_s: float
    compute_s: float
    write_s: float
    task_s: float
    wall_s: float
    executor: str
    cpu_s: float = 0.0
    outcomes: tuple[TaskOutcome, ...] = field(repr=False, default=())
    exposed_write_s: float = 0.0  # of write_s, the waits no other task's work overlapped
    workers: int = 1  # worker processes (CPUs) the sweep ran on

    @property
    def ok(self) -> bool:
        return not self.failures and len(self.points) == self.expected_points

    def ranking(self, metric: str = "sharpe") -> list[ParamRanking]:
        """Parameter sets ranked by ``metric`` averaged over symbols (NaN last)."""
        higher = _check_metric(metric)
        groups: dict[str, list[PointSummary]] = {}
        for p in self.points:
            groups.setdefault(p.key, []).append(p)
        names = get_strategy(self.strategy).param_names
        rows: list[dict[str, Any]] = []
        for key, items in groups.items():
            rows.append(
                {
                    "key": key,
                    "params": {n: items[0].params[n] for n in names if n in items[0].params},
                    "symbols": len(items),
                    **{m: _mean(i.metrics.get(m) for i in items) for m in METRICS},
                    "trades": sum(int(i.metrics.get("trades") or 0) for i in items),
                }
            )

        def order(row: dict[str, Any]) -> tuple[int, float, str]:
            value = row[metric]
            if math.isnan(value):
                return (1, 0.0, row["key"])
            return (0, -value if higher else value, row["key"])

        rows.sort(key=order)
        return [ParamRanking(rank=i + 1, **row) for i, row in enumerate(rows)]

    def summary(self) -> dict[str, Any]:
        """Counts and timings (no per-point data)."""
        return {
            "sweep_id": self.sweep_id,
            "strategy": self.strategy,
            "timeframe": self.timeframe,
            "symbols": list(self.symbols),
            "versions": dict(self.versions),
            "points": len(self.points),
            "expected_points": self.expected_points,
            "computed": self.computed,
            "reused": self.reused,
            "rejected": len(self.rejected),
            "tasks": self.tasks,
            "failed_tasks": len(self.failures),
            "retried_tasks": len(self.retried),
            "nodes": len(self.nodes),
            "wall_s": round(self.wall_s, 3),
            "task_s": round(self.task_s, 3),
            "read_share": round(self.read_s / self.task_s, 4) if self.task_s else 0.0,
            "executor": self.executor,
        }


def _check_metric(metric: str) -> bool:
    if metric not in METRICS:
        raise ConfigError(f"cannot rank by {metric!r}; choose one of {', '.join(METRICS)}")
    return METRICS[metric]


def _mean(values: Any) -> float:
    """The mean of the non-NaN values, independent of their order (``fsum`` is exact): the
    points of a sweep arrive in whatever order its tasks finish, and a re-run must rank, and
    train, bit for bit the same."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return math.fsum(xs) / len(xs) if xs else math.nan


# --- planning ----------------------------------------------------------------------------------


def _resolve_symbols(store: Store, symbols: Sequence[str] | str, timeframe: str) -> tuple[str, ...]:
    if isinstance(symbols, str):
        symbols = [s.strip() for s in symbols.split(",") if s.strip()]
    symbols = list(symbols)
    if symbols in (["all"], ["*"]):  # the only case that needs a listing
        stored = [s for s, t in store.market.list_series() if t == timeframe]
        if not stored:
            raise NotFoundError(
                f"no {timeframe} series in the store at {store.root}; ingest some with "
                "`efsray data ingest` (or run `efsray demo`)"
            )
        return tuple(stored)
    if not symbols:
        raise ConfigError("no symbols given; pass --symbols A,B,C or --symbols all")
    if len(set(symbols)) != len(symbols):
        raise ConfigError(f"symbols {symbols} contain duplicates; give each symbol once")
    return tuple(symbols)


def plan_sweep(
    store: Store,
    *,
    symbols: Sequence[str] | str,
    timeframe: str,
    strategy: str,
    grid: ParamGrid | str,
    config: BacktestConfig | None = None,
    parallelism: int = 1,
    chunk_size: int | None = None,
    batch_size: int = 500,
    run_id: str | None = None,
    hook: str | None = None,
) -> SweepPlan:
    """Pin versions, expand the grid, cut tasks. Reads manifests only, never bars.

    The plan's tasks have no creation time yet: :func:`prepare_sweep` records the sweep and
    gives them the time of its result ids."""
    if chunk_size is not None and chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    config = config or BacktestConfig()
    tf = parse_timeframe(timeframe).name
    strat = get_strategy(strategy)
    grid = parse_grid(grid) if isinstance(grid, str) else grid
    expansion = strat.expand(grid)
    syms = _resolve_symbols(store, symbols, tf)
    versions: dict[str, int] = {}
    bars: dict[str, int] = {}
    for symbol in syms:
        try:
            info = store.market.info(symbol, tf)
        except NotFoundError:
            stored = sorted({s for s, t in store.market.list_series() if t == tf})
            raise NotFoundError(
                f"no {tf} bars for {symbol!r} in the store at {store.root}; stored {tf} "
                f"symbols: {', '.join(stored) if stored else 'none'}"
            ) from None
        if info.rows < 2:
            raise ConfigError(f"{symbol}/{tf} has {info.rows} bars; a backtest needs at least 2")
        versions[symbol] = info.version
        bars[symbol] = info.rows
    points = expansion.points
    if chunk_size is None:
        # Enough tasks to keep every CPU busy (x3 for balance), each big enough that reading
        # the symbol once is a small share of its time.
        wanted = max(len(syms), 3 * max(parallelism, 1))
        per_symbol = max(1, math.ceil(wanted / len(syms)))
        chunk_size = max(1, math.ceil(len(points) / per_symbol))
    run = run_id or secrets.token_hex(6)
    plan = SweepPlan(
        sweep_id="",
        run_id=run,
        root=str(store.root.resolve()),
        strategy=strat.name,
        timeframe=tf,
        symbols=syms,
        versions=versions,
        bars=bars,
        points=points,
        rejected=expansion.rejected,
        config=config,
        tasks=(),
    )
    sweep_id = "sw-" + hashlib.sha256(canonical_json(plan.definition())).hexdigest()[:20]
    # Sweep order (the index in a result's run id): symbols sorted, then the grid's points.
    order = {symbol: n for n, symbol in enumerate(sorted(syms))}
    tasks = [
        TaskSpec(
            root=plan.root,
            sweep_id=sweep_id,
            run_id=run,
            task_key=f"{symbol}.{n}",
            symbol=symbol,
            timeframe=tf,
            version=versions[symbol],
            strategy=strat.name,
            points=tuple(dict(p) for p in points[offset : offset + chunk_size]),
            config=config.to_dict(),
            first_index=order[symbol] * len(points) + offset,
            sweep_size=len(syms) * len(points),
            batch_size=batch_size,
            hook=hook,
        )
        for symbol in syms
        for n, offset in enumerate(range(0, len(points), chunk_size))
    ]
    return dataclasses.replace(plan, sweep_id=sweep_id, tasks=tuple(tasks))


# --- running -------------------------------------------------------------------------------------


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
        outcomes, failures = _run_on_ray(plan, max_retries, parallelism, progress, workers)
    else:
        outcomes, failures = _run_here(plan, max_retries, progress)
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
        cpu_s=sum(o.cpu_s for o in outcomes),
        outcomes=tuple(outcomes),
        exposed_write_s=sum(o.exposed_write_s for o in outcomes),
        workers=parallelism,
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
        raise ClusterError(f"{func.__name__} failed on the cluster: {_first(exc)}") from None


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


def _cluster_cpus() -> int:
    import ray

    if not ray.is_initialized():
        raise ClusterError(
            "run_sweep(executor='ray') needs a Ray connection: wrap it in "
            "`with efsray.cluster.connect(...)`"
        )
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _run_here(
    plan: SweepPlan, max_retries: int, progress: Progress | None
) -> tuple[list[TaskOutcome], list[TaskFailure]]:
    outcomes: list[TaskOutcome] = []
    failures: list[TaskFailure] = []
    done = failed = 0
    for spec in plan.tasks:
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(max_retries + 1),
            wait=tenacity.wait_random_exponential(multiplier=0.05, max=2.0),
            retry=tenacity.retry_if_exception_type(RETRYABLE),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            outcomes.append(retrying(run_task, spec))
            done += len(spec.points)
        except EfsrayError as exc:  # not retryable, or retried max_retries times
            failures.append(_failure(spec, exc))
            failed += len(spec.points)
        if progress:
            progress(done, plan.size, failed)
    return outcomes, failures


def _log_retry(state: tenacity.RetryCallState) -> None:
    spec = state.args[0] if state.args else None
    error = state.outcome.exception() if state.outcome else None
    log.warning("task %s failed (%s); retrying", getattr(spec, "task_key", "?"), error)


def _run_on_ray(
    plan: SweepPlan,
    max_retries: int,
    parallelism: int,
    progress: Progress | None,
    pool: SweepWorkers | None,
) -> tuple[list[TaskOutcome], list[TaskFailure]]:
    """Feed the sweep workers (``pool``'s, else ``parallelism`` new ones stopped at the end)
    two tasks at a time each."""
    import ray
    from ray.exceptions import RayActorError, RayError

    own = pool is None
    if pool is None:
        pool = SweepWorkers(parallelism)
    workers = pool.handles[:parallelism]
    load = [0] * len(workers)
    alive = set(range(len(workers)))
    queue = list(plan.tasks)
    moved: dict[str, int] = {}  # task key -> times moved off a worker that is gone for good
    pending: dict[Any, tuple[TaskSpec, int]] = {}
    outcomes: list[TaskOutcome] = []
    failures: list[TaskFailure] = []
    done = failed = 0
    if progress:
        progress(0, plan.size, 0)
    try:
        while queue or pending:
            while queue and alive:
                w = min(alive, key=lambda i: (load[i], i))  # the least busy worker
                if load[w] >= IN_FLIGHT:
                    break
                spec = queue.pop(0)
                call = workers[w].run.options(
                    max_task_retries=max_retries,
                    retry_exceptions=list(RETRYABLE),
                    name=f"efsray-backtest {spec.task_key}",
                )
                pending[call.remote(spec)] = (spec, w)
                load[w] += 1
            if not pending:  # every worker is gone: what is left fails
                for spec in queue:
                    failures.append(_failure(spec, ClusterError("no sweep worker is left")))
                    failed += len(spec.points)
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                spec, w = pending.pop(ref)
                load[w] -= 1
                try:
                    outcomes.append(ray.get(ref))
                    done += len(spec.points)
                except RayActorError as exc:  # the worker is gone for good (not restartable)
                    alive.discard(w)
                    moved[spec.task_key] = moved.get(spec.task_key, 0) + 1
                    if alive and moved[spec.task_key] <= max_retries:
                        log.warning("worker of task %s is gone (%s); moving it", spec.task_key,
                                    _first(exc))  # fmt: skip
                        queue.insert(0, spec)
                        continue
                    failures.append(_failure(spec, exc))
                    failed += len(spec.points)
                except RayError as exc:
                    failures.append(_failure(spec, exc))
                    failed += len(spec.points)
                if progress:
                    progress(done, plan.size, failed)
    finally:
        if own:  # every task has returned: nothing is left to commit
            pool.close()
    return outcomes, failures


def _failure(spec: TaskSpec, exc: BaseException) -> TaskFailure:
    cause = getattr(exc, "cause", None) or exc
    text = f"{type(cause).__name__}: {cause}".strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    log.error("task %s (%s) failed: %s", spec.task_key, spec.symbol, first)
    return TaskFailure(spec.task_key, spec.symbol, len(spec.points), first[:500])
