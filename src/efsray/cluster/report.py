"""What a sweep reports: every point's summary, failures, retries, timings, and the ranking of
parameter sets by a metric averaged over symbols."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from efsray.backtest import RejectedPoint, get_strategy
from efsray.cluster.tasks import PointSummary, TaskOutcome
from efsray.errors import ConfigError

__all__ = ["METRICS", "ParamRanking", "SweepReport", "TaskFailure", "process_cpu_s"]

# metric -> True when higher is better
METRICS: Mapping[str, bool] = {
    "sharpe": True,
    "sortino": True,
    "total_return": True,
    "annualized_return": True,
    "max_drawdown": False,
    "win_rate": True,
}


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
    drain_s: float = 0.0  # after the last task: waiting for the workers' merges

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


def process_cpu_s(outcomes: Sequence[TaskOutcome]) -> float:
    """CPU seconds the processes that ran ``outcomes`` used for them: per process, from its
    first task's start to its last task's end (a sweep worker runs two tasks at once)."""
    spans: dict[tuple[str, int], tuple[float, float]] = {}
    for o in outcomes:
        start, end = o.cpu_clock
        key = (o.host, o.pid)
        first, last = spans.get(key, (start, end))
        spans[key] = (min(first, start), max(last, end))
    return sum(end - start for start, end in spans.values())
