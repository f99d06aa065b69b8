"""Running a planned sweep's tasks: one by one in this process (``executor="local"``, the
reference, retried through tenacity), or on Ray's sweep workers (two tasks in flight each,
retried by this executor on another worker)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import tenacity

from efsray.cluster.report import TaskFailure
from efsray.cluster.tasks import TaskOutcome, TaskSpec, run_task
from efsray.cluster.worker import IN_FLIGHT, SweepWorkers
from efsray.errors import ClusterError, DeadlineExceeded, EfsrayError, StorageError

if TYPE_CHECKING:
    from efsray.cluster.plan import SweepPlan

__all__ = ["RETRYABLE", "Progress", "first_line", "run_here", "run_on_ray"]

log = logging.getLogger("efsray.cluster")

RETRYABLE = (StorageError, DeadlineExceeded)
Progress = Callable[[int, int, int], None]  # (points done, points total, points failed)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


def run_here(
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


def run_on_ray(
    plan: SweepPlan,
    max_retries: int,
    parallelism: int,
    progress: Progress | None,
    pool: SweepWorkers | None,
) -> tuple[list[TaskOutcome], list[TaskFailure], float]:
    """Feed the sweep workers (``pool``'s, else ``parallelism`` new ones stopped at the end)
    two tasks at a time each; then wait for their merges. Returns the outcomes, the
    failures and the seconds that last wait took."""
    import ray
    from ray.exceptions import RayActorError, RayError

    own = pool is None
    if pool is None:
        pool = SweepWorkers(parallelism)
    workers = pool.handles[:parallelism]
    load = [0] * len(workers)
    alive = set(range(len(workers)))
    down: set[int] = set()  # died during this sweep; replaced when none is left
    queue = list(plan.tasks)
    tries: dict[str, int] = {}  # task key -> failed attempts (a worker lost, a retryable error)
    pending: dict[Any, tuple[TaskSpec, int, Any]] = {}  # call -> task, worker, its handle
    outcomes: list[TaskOutcome] = []
    failures: list[TaskFailure] = []
    done = failed = 0

    def again(spec: TaskSpec, exc: BaseException) -> bool:
        """Put a failed task back at the front of the queue, if it has tries left."""
        tries[spec.task_key] = tries.get(spec.task_key, 0) + 1
        if tries[spec.task_key] > max_retries:
            return False
        log.warning("task %s failed (%s); again", spec.task_key, first_line(exc))
        queue.insert(0, spec)
        return True

    if progress:
        progress(0, plan.size, 0)
    try:
        while queue or pending:
            while queue and alive:
                w = min(alive, key=lambda i: (load[i], i))  # the least busy worker
                if load[w] >= IN_FLIGHT:
                    break
                spec = queue.pop(0)
                # Retries are this loop's, not Ray's: a dead worker's calls fail at once
                # (SweepWorkers) and its tasks go to the others.
                call = workers[w].run.options(
                    max_task_retries=0, name=f"efsray-backtest {spec.task_key}"
                )
                pending[call.remote(spec)] = (spec, w, workers[w])
                load[w] += 1
            if not pending:  # nothing in flight and no worker to take the rest
                for spec in queue:
                    failures.append(_failure(spec, ClusterError("no sweep worker is left")))
                    failed += len(spec.points)
                break
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                spec, w, handle = pending.pop(ref)
                load[w] -= 1
                try:
                    outcomes.append(ray.get(ref))
                    done += len(spec.points)
                except RayActorError as exc:  # its worker died: the task goes to another
                    if handle is workers[w]:  # (not a call to one already replaced)
                        alive.discard(w)
                        down.add(w)
                    if not alive:  # none other: start new ones where the dead ones were
                        for d in down:
                            workers[d] = pool.replace(d)
                        alive, down = down, set()
                    if again(spec, exc):
                        continue
                    failures.append(_failure(spec, exc))
                    failed += len(spec.points)
                except RayError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, RETRYABLE) and again(spec, exc):
                        continue
                    failures.append(_failure(spec, exc))
                    failed += len(spec.points)
                if progress:
                    progress(done, plan.size, failed)
        drained = time.perf_counter()
        _drain(workers, alive)
        drain_s = time.perf_counter() - drained
    finally:
        if own:  # every task has returned: nothing is left to commit
            pool.close()
    return outcomes, failures, drain_s


def _drain(workers: list[Any], alive: set[int]) -> None:
    """Wait for the merges the workers' commits asked for, so that the sweep ends with its
    table merged as a plain ``save_batch`` leaves it (a dead worker's are lost: its
    segments stay as they are until the next merge)."""
    import ray
    from ray.exceptions import RayError

    calls = [workers[w].drain.remote() for w in sorted(alive)]
    for call in calls:
        try:
            ray.get(call)
        except RayError as exc:
            log.warning("a sweep worker's merges did not finish: %s", first_line(exc))


def _failure(spec: TaskSpec, exc: BaseException) -> TaskFailure:
    cause = getattr(exc, "cause", None) or exc
    text = f"{type(cause).__name__}: {cause}".strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    log.error("task %s (%s) failed: %s", spec.task_key, spec.symbol, first)
    return TaskFailure(spec.task_key, spec.symbol, len(spec.points), first[:500])
