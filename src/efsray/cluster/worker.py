"""A sweep worker: one per CPU, it runs tasks back to back and commits their results behind.

On an EFS-like mount a batch commit is a few dozen server round trips (~0.15-0.3 s) that use
almost no CPU. A task that waits for its last commit before returning leaves its core idle
for that long; with one short task per symbol that was a fifth of the sweep's time on the
simulated EFS. A :class:`SweepWorker` (a Ray actor with two calls in flight, see
:func:`efsray.cluster.sweep.run_sweep`) keeps the core busy: its tasks take turns on one
*compute slot*, and hand their batches to one *committer* thread that the worker keeps for
its whole life, so a task's last commit runs while the next task reads its bars and
computes.

Merging the table's small segments (``store.results.merge``, which a plain ``save_batch``
runs right after its commit) is the worker's *merger* thread's job: a task waits for its
commits, not for merges; the committer asks the merger to merge after each commit, requests
for one table coalesce, and the sweep waits for every worker's merges once, at its end
(:meth:`SweepWorker.drain`). A merge is only a reorganisation committed like any change (a
merge killed half-way leaves garbage for cleanup, never a lost run): a commit no longer
queues behind a merge of 1,600 runs (~1.5 s on the simulated EFS) that the task does not
need.

What does not change: a task returns its outcome only once every batch it computed is
committed (it waits for its own futures after giving the slot up), so nothing is ever
reported stored that is not. A worker killed at any instant loses only uncommitted batches
of tasks that have not returned; the sweep retries those tasks on another worker, which
skip the points whose results are stored (``tests/test_cluster_worker.py`` kills one with
SIGKILL while a task computes and another's batches commit).

:class:`WorkerPipeline` also keeps the books on the time that waiting costs: the seconds in
which a call waited for its commits while no call computed (*exposed* write time; the rest
of a wait overlapped another task's work).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import count
from types import TracebackType
from typing import Any

from efsray.cluster.tasks import TaskOutcome, TaskSpec, run_task
from efsray.errors import ClusterError, ConfigError
from efsray.store import ResultStore

__all__ = ["IN_FLIGHT", "SweepWorker", "SweepWorkers", "WorkerPipeline"]

log = logging.getLogger("efsray.cluster")

IN_FLIGHT = 2  # tasks per sweep worker: one computes while the other's batches commit


class WorkerPipeline:
    """One compute slot and one committer thread, shared by the tasks a process runs at once.

    ``computing()`` holds the slot (one task computes at a time: the process has one core's
    worth of work to give); ``committer`` is the single thread that commits every task's
    batches in the order they were handed over; ``waiting()`` marks a task waiting for its
    commits and yields a function that returns the exposed seconds of that wait so far.
    """

    def __init__(self) -> None:
        self.committer = ThreadPoolExecutor(1, thread_name_prefix="efsray-commit")
        self._merger = ThreadPoolExecutor(1, thread_name_prefix="efsray-merge")
        self._merges: set[tuple[str, str]] = set()  # (table directory, strategy) queued
        self._slot = threading.Lock()
        self._books = threading.Lock()
        self._computing = 0
        self._exposed: dict[int, float] = {}  # waiting call -> exposed seconds so far
        self._since = time.perf_counter()
        self._tokens = count()

    def _tick(self) -> None:
        """Charge the time since the last change to the waiting calls if none computed
        (caller holds ``_books``); a stretch with two calls waiting is split between them."""
        now = time.perf_counter()
        if self._exposed and not self._computing:
            share = (now - self._since) / len(self._exposed)
            for token in self._exposed:
                self._exposed[token] += share
        self._since = now

    @contextmanager
    def computing(self) -> Iterator[None]:
        with self._slot:
            with self._books:
                self._tick()
                self._computing += 1
            try:
                yield
            finally:
                with self._books:
                    self._tick()
                    self._computing -= 1

    @contextmanager
    def waiting(self) -> Iterator[Callable[[], float]]:
        token = next(self._tokens)
        with self._books:
            self._tick()
            self._exposed[token] = 0.0
        final: list[float] = []

        def exposed() -> float:
            if final:
                return final[0]
            with self._books:
                self._tick()
                return self._exposed.get(token, 0.0)

        try:
            yield exposed
        finally:
            with self._books:
                self._tick()
                final.append(self._exposed.pop(token))

    def merge_later(self, results: ResultStore, strategy: str) -> None:
        """Merge ``strategy``'s table on the merger thread (once for requests made while a
        merge of it is queued); a failed merge is logged (the next one retries it)."""
        key = (str(results.layout.results), strategy)
        with self._books:
            if key in self._merges:
                return
            self._merges.add(key)

        def merge() -> None:
            with self._books:
                self._merges.discard(key)
            try:
                results.merge(strategy)
            except Exception as exc:  # noqa: BLE001 - the runs are committed; merge later
                log.warning("results table %s: merging failed: %s", strategy, exc)

        self._merger.submit(merge)

    def drain(self) -> None:
        """Return once every batch handed over is committed and every merge asked for done."""
        self.committer.submit(lambda: None).result()
        self._merger.submit(lambda: None).result()

    def close(self) -> None:
        """Wait for the batches handed over (every task waits for its own anyway) and the
        merges they asked for."""
        self.committer.shutdown(wait=True)
        self._merger.shutdown(wait=True)


class SweepWorker:
    """Runs sweep tasks (:func:`efsray.cluster.tasks.run_task`) through one
    :class:`WorkerPipeline`; call :meth:`run` from up to two threads at once (a Ray actor
    with ``max_concurrency=2``) so that one task computes while another's batches commit."""

    def __init__(self) -> None:
        self._pipeline = WorkerPipeline()

    def run(self, spec: TaskSpec) -> TaskOutcome:
        return run_task(spec, self._pipeline)

    def drain(self) -> None:
        """Wait for the merges the tasks' commits asked for (see the module docstring)."""
        self._pipeline.drain()

    def close(self) -> None:
        self._pipeline.close()


class SweepWorkers:
    """Sweep workers on the connected Ray cluster: ``count`` actors (default: one per CPU of
    the cluster), spread over the nodes, one CPU each. A worker that dies is not restarted
    by Ray (its calls would wait for a free CPU, which never comes while its node is gone
    and the others hold theirs): the sweep moves its tasks to the others and, when none is
    left, :meth:`replace` starts a new one. :func:`efsray.cluster.sweep.run_sweep` starts
    its own and stops them at the end; pass ``workers=`` to run several sweeps through the
    same ones (a worker process takes seconds to start on a busy node) and stop them with
    :meth:`close` or ``with``."""

    def __init__(self, count: int | None = None) -> None:
        import ray

        if not ray.is_initialized():
            raise ClusterError(
                "sweep workers need a Ray connection: start them inside "
                "`with efsray.cluster.connect(...)`"
            )
        if count is None:
            count = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"count must be an integer >= 1, got {count!r}")
        self._actor = ray.remote(SweepWorker).options(
            num_cpus=1,
            max_concurrency=IN_FLIGHT,
            max_restarts=0,  # a dead worker's calls fail at once: the sweep moves them
            scheduling_strategy="SPREAD",
        )
        self.handles: list[Any] = [self._actor.remote() for _ in range(count)]

    def replace(self, index: int) -> Any:
        """Start a new worker in place of the dead one at ``index``; its handle."""
        self.handles[index] = self._actor.remote()
        return self.handles[index]

    def __len__(self) -> int:
        return len(self.handles)

    def close(self) -> None:
        """Stop the workers (call it when no task is in flight: nothing is then uncommitted)."""
        import ray

        handles, self.handles = self.handles, []
        for handle in handles:
            ray.kill(handle)

    def __enter__(self) -> SweepWorkers:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
