"""The work of one sweep task, on whichever node runs it.

A task is one symbol and a chunk of parameter sets. It opens the store at the path it was
given (every node mounts the same volume there), reads the symbol's closes once at the pinned
market-data version, runs the backtests, and commits their results in batches of
``batch_size`` with ``store.results.save_batch`` (one segment and one version each), under
the run ids derived for the grid points (:func:`efsray.cluster.journal.result_id`). Only
paths, names, versions and parameters travel through Ray; market data never does.

A task is idempotent: it first reads the results its points already have (saved by an
earlier attempt that was killed, or an earlier run of the same sweep; read by id, not from
a listing) and computes only the missing points. The sweep retries a task whose worker died; the
retry resumes after the last batch the dead attempt committed (a killed batch left nothing
visible), and a batch that races a not-quite-dead attempt gets the stored runs (batches with
chosen ids are idempotent).

A batch costs a handful of round trips however many runs it holds, so a task's results cost
far less than its backtests; with ``writers`` > 0 the batches are committed on a background
thread while the next backtests compute (the waits release the GIL). Run by a
:class:`efsray.cluster.worker.SweepWorker`, that thread is the worker's and outlives the
task: the task computes in the worker's compute slot, gives the slot up to the next task
and only then waits for its own last commits, so they overlap the next task's work. Either
way a task returns only once all its batches are committed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from efsray.backtest import BacktestConfig, Backtester, get_strategy
from efsray.backtest.engine import ENGINE_VERSION
from efsray.cluster.journal import SweepJournal, point_key, result_id, writer_info
from efsray.errors import ConfigError, StoreFormatError
from efsray.store import ResultStore, RunInfo, Store
from efsray.store.results import RunSpec

if TYPE_CHECKING:
    from efsray.cluster.worker import WorkerPipeline

__all__ = ["PointSummary", "TaskOutcome", "TaskSpec", "equity_table", "run_task"]

Hook = Callable[[str, Mapping[str, Any]], None]
_UTC_NS = pa.timestamp("ns", tz="UTC")


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Everything a task needs, all of it small: paths, names, versions, parameters.

    ``created_at`` (ISO 8601) is the sweep's recorded creation time, ``first_index`` the
    sweep-wide index of ``points[0]`` and ``sweep_size`` the number of points in the sweep:
    with the sweep id, symbol and point key they make the run id of each point's result.
    ``batch_size``: runs per committed batch. ``writers``: 1 commits batches on a background
    thread while the next backtests run, 0 in the computing thread. ``hook`` names a
    function ``"module:function"`` called on the worker at ``task_start`` and
    ``before_save`` (of each batch, on the committing thread) with a dict of details: an
    observation and fault-injection point for tests and chaos drills (it may kill the
    process).
    """

    root: str
    sweep_id: str
    run_id: str
    task_key: str
    symbol: str
    timeframe: str
    version: int
    strategy: str
    points: tuple[Mapping[str, int | float], ...]
    config: Mapping[str, Any]
    created_at: str = ""
    first_index: int = 0
    sweep_size: int = 0
    equity_points: int = 250
    writers: int = 1
    batch_size: int = 500
    hook: str | None = None


@dataclass(frozen=True, slots=True)
class PointSummary:
    """One grid point's result as the driver sees it; the whole run (equity curve, data
    versions, costs) is in ``store.results`` under ``result_id``."""

    symbol: str
    key: str
    params: Mapping[str, int | float]
    metrics: Mapping[str, Any]
    computed: bool
    result_id: str = ""


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    task_key: str
    symbol: str
    attempt: int
    node_id: str
    host: str
    pid: int
    points: tuple[PointSummary, ...]
    computed: int
    reused: int
    read_s: float  # finding existing results and reading the bars
    compute_s: float
    write_s: float  # waiting for the last saves after the last backtest
    total_s: float
    # CPU time of this process during the task (a worker's two tasks in flight overlap: the
    # report counts a worker's CPU once, from the process clock at the first start and the
    # last end of its tasks)
    cpu_s: float = 0.0
    cpu_clock: tuple[float, float] = (0.0, 0.0)  # the process CPU clock at start and end
    save_s: float = 0.0  # summed time of the saves on the writer threads (overlapped)
    # the part of write_s during which the worker computed nothing (no other task overlapped)
    exposed_write_s: float = 0.0
    # wall-clock time (time.time()) of the task's start and end on its worker: the report's
    # reader sees when each worker went idle (the sweep's tail)
    started_at: float = 0.0
    ended_at: float = 0.0


def _load_hook(name: str | None) -> Hook | None:
    if not name:
        return None
    module, sep, func = name.partition(":")
    if not sep:
        raise ConfigError(f"task hook {name!r} must be 'module:function'")
    hook: Hook = getattr(importlib.import_module(module), func)
    return hook


def _node_id() -> str:
    ray = sys.modules.get("ray")  # never import Ray just to ask (a local run has none)
    if ray is not None and ray.is_initialized():
        return str(ray.get_runtime_context().get_node_id())
    return "local"


def equity_table(timestamps_ns: np.ndarray, values: np.ndarray, limit: int) -> pa.Table:
    """At most ``limit`` evenly spaced points of an equity curve, always with its first and
    last, as an Arrow table (``timestamp`` in UTC, ``equity``)."""
    n = values.shape[0]
    # With n > limit the step is > 1, so the rounded positions are distinct and increasing.
    idx = np.arange(n) if n <= limit else np.rint(np.linspace(0, n - 1, limit)).astype(np.int64)
    return pa.Table.from_arrays(
        [pa.array(timestamps_ns[idx], _UTC_NS), pa.array(values[idx], pa.float64())],
        names=["timestamp", "equity"],
    )


class _Writers:
    """Commits batches of results, on a background thread while the caller computes: the
    worker's ``committer`` when given (shared with the worker's other tasks, and left
    running), else a thread of its own."""

    def __init__(
        self,
        results: ResultStore,
        spec: TaskSpec,
        attempt: int,
        hook: Hook | None,
        committer: ThreadPoolExecutor | None = None,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._results = results
        self._after_commit = after_commit
        self._spec = spec
        self._attempt = attempt
        self._hook = hook
        self._own = committer is None and spec.writers > 0
        self._pool: ThreadPoolExecutor | None = None  # writers=0: commit in the caller
        if self._own:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="efsray-save")
        elif spec.writers > 0:
            self._pool = committer
        self._futures: list[Future[list[RunInfo]]] = []
        self._pending: list[RunSpec] = []
        self._first = 0
        self.saved = 0
        self.save_s = 0.0

    def submit(self, index: int, run: RunSpec) -> None:
        if not self._pending:
            self._first = index
        self._pending.append(run)
        if len(self._pending) >= max(1, self._spec.batch_size):
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        batch, first = self._pending, self._first
        self._pending = []
        if self._pool is None:
            future: Future[list[RunInfo]] = Future()
            future.set_result(self._save(first, batch))
        else:
            for done in self._futures:  # stop at the first failed batch, not at the end
                if done.done() and done.exception() is not None:
                    done.result()
            future = self._pool.submit(self._save, first, batch)
        self._futures.append(future)

    def _save(self, first: int, batch: list[RunSpec]) -> list[RunInfo]:
        spec = self._spec
        if self._hook is not None:
            self._hook(
                "before_save",
                {
                    "task": spec.task_key,
                    "attempt": self._attempt,
                    "index": first,
                    "saved": self.saved,
                    "root": spec.root,
                    "strategy": spec.strategy,
                    "run_ids": [r.run_id for r in batch],
                },
            )
        started = time.perf_counter()
        infos = self._results.save_batch(spec.strategy, batch)
        self.saved += len(infos)
        self.save_s += time.perf_counter() - started
        if self._after_commit is not None:
            self._after_commit()
        return infos

    def results(self) -> list[RunInfo]:
        """Commit what is pending and wait for every batch; the first failure is raised."""
        self.flush()
        return [info for f in self._futures for info in f.result()]

    def close(self) -> None:
        """Drop the batches not started (after a failure) and stop an own thread."""
        for future in self._futures:
            future.cancel()
        if self._own and self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def run_task(spec: TaskSpec, pipeline: WorkerPipeline | None = None) -> TaskOutcome:
    """Run one task (see the module docstring); returns small summaries and timings.

    With a ``pipeline`` (a :class:`efsray.cluster.worker.SweepWorker`'s), the backtests run
    in its compute slot and the batches are committed on its committer thread."""
    started = time.perf_counter()
    started_at = time.time()
    cpu_started = time.process_time()
    hook = _load_hook(spec.hook)
    node_id = _node_id()
    who = writer_info()
    try:
        store = Store(spec.root, create=False)
    except StoreFormatError as exc:
        raise StoreFormatError(
            f"node {who['host']} (Ray node {node_id[:12]}) cannot see the store at "
            f"{spec.root}: {exc}. Every node must mount the shared volume at the same path"
        ) from None
    if not spec.created_at:
        raise ConfigError(
            f"task {spec.task_key} of sweep {spec.sweep_id} has no sweep creation time; "
            "plan sweeps with efsray.cluster.sweep.prepare_sweep (run_sweep does)"
        )
    created = dt.datetime.fromisoformat(spec.created_at)
    strategy = get_strategy(spec.strategy)
    config = BacktestConfig.from_dict(spec.config)
    keys = [point_key(p) for p in spec.points]
    ids = [
        result_id(spec.sweep_id, created, spec.first_index + i, spec.sweep_size, spec.symbol, key)
        for i, key in enumerate(keys)
    ]
    t = time.perf_counter()
    stored: dict[str, RunInfo] = store.results.infos(spec.strategy, ids)
    read_s = time.perf_counter() - t
    todo = [i for i, run_id in enumerate(ids) if run_id not in stored]
    # Only tasks with work to do claim an attempt: a re-run that reuses everything leaves
    # no trace, and a retry shows as a second attempt.
    attempt = 0
    if todo:
        attempt = SweepJournal(store).begin_attempt(
            spec.sweep_id, spec.run_id, spec.task_key, {**who, "node_id": node_id}
        )
    if hook is not None:
        hook(
            "task_start",
            {
                "task": spec.task_key,
                "attempt": attempt,
                "points_to_do": len(todo),
                "pid": who["pid"],
                "root": spec.root,
            },
        )

    compute_s = write_s = save_s = exposed_s = 0.0
    computed: set[str] = set()
    if todo:
        t = time.perf_counter()
        table = store.market.read(
            spec.symbol, spec.timeframe, columns=["close"], version=spec.version
        )
        close = table.column("close").to_numpy()
        stamps = table.column("timestamp").cast(pa.int64()).to_numpy()
        read_s += time.perf_counter() - t
        extra = {
            "engine": ENGINE_VERSION,
            "config": dict(spec.config),
            "market": {
                "bars": int(close.shape[0]),
                "start_ns": int(stamps[0]),
                "end_ns": int(stamps[-1]),
            },
        }
        data_versions = {f"{spec.symbol}/{spec.timeframe}": spec.version}
        t = time.perf_counter()
        backtester = Backtester(close, timeframe=spec.timeframe, config=config)
        compute_s += time.perf_counter() - t
        after_commit = None
        if pipeline is not None:  # the worker's merger merges; the task waits for commits only
            store.results.merge_after_commit = False
            results = store.results
            after_commit = lambda: pipeline.merge_later(results, spec.strategy)  # noqa: E731
        writers = _Writers(
            store.results, spec, attempt, hook,
            pipeline.committer if pipeline else None, after_commit,
        )  # fmt: skip
        slot = pipeline.computing() if pipeline is not None else contextlib.nullcontext()
        try:
            with slot:
                for i in todo:
                    t = time.perf_counter()
                    result = backtester.run(strategy, spec.points[i])
                    run = RunSpec(
                        metrics=result.metrics.to_dict(),
                        params=dict(result.params),
                        equity_curve=equity_table(stamps, result.equity, spec.equity_points),
                        data_versions=data_versions,
                        tags={
                            "sweep": spec.sweep_id,
                            "symbol": spec.symbol,
                            "timeframe": spec.timeframe,
                            "point": keys[i],
                        },
                        extra=extra,
                        run_id=ids[i],
                    )
                    compute_s += time.perf_counter() - t
                    writers.submit(spec.first_index + i, run)
                writers.flush()  # the last batch goes to the committer before the slot is free
            t = time.perf_counter()
            if pipeline is None:
                saved = writers.results()
                exposed_s = write_s = time.perf_counter() - t
            else:
                with pipeline.waiting() as exposed:
                    saved = writers.results()
                write_s, exposed_s = time.perf_counter() - t, exposed()
        finally:
            writers.close()
        save_s = writers.save_s
        for info in saved:
            stored[info.run_id] = info
            computed.add(info.run_id)
    points = tuple(
        PointSummary(
            symbol=spec.symbol,
            key=key,
            params=stored[run_id].params,
            metrics=stored[run_id].metrics,
            computed=run_id in computed,
            result_id=run_id,
        )
        for key, run_id in zip(keys, ids, strict=True)
    )
    return TaskOutcome(
        task_key=spec.task_key,
        symbol=spec.symbol,
        attempt=attempt,
        node_id=node_id,
        host=str(who["host"]),
        pid=int(who["pid"]),
        points=points,
        computed=len(computed),
        reused=len(ids) - len(todo),
        read_s=read_s,
        compute_s=compute_s,
        write_s=write_s,
        total_s=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu_started,
        cpu_clock=(cpu_started, time.process_time()),
        save_s=save_s,
        exposed_write_s=exposed_s,
        started_at=started_at,
        ended_at=time.time(),
    )
