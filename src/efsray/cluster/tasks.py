"""The work of one sweep task, on whichever node runs it.

A task is one symbol and a chunk of parameter sets. It opens the store at the path it was
given (every node mounts the same volume there), reads the symbol's closes once at the pinned
market-data version, runs the backtests, and creates one journal record per parameter set.
Only paths, names, versions and parameters travel through Ray; market data never does.

A task is idempotent: it first looks for its batches of records in the journal (written by
an earlier attempt that was killed, or an earlier run of the same sweep) and computes only the
missing batches.
Ray retries a task whose worker died; the retry resumes where the dead attempt stopped.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from efsray.backtest import BacktestConfig, Backtester, get_strategy
from efsray.backtest.engine import ENGINE_VERSION, BacktestResult
from efsray.cluster.journal import RECORD_FORMAT, SweepJournal, point_key, writer_info
from efsray.errors import ConfigError, StoreFormatError
from efsray.store import Store

__all__ = ["PointSummary", "TaskOutcome", "TaskSpec", "downsample", "run_task"]

Hook = Callable[[str, Mapping[str, Any]], None]


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """Everything a task needs, all of it small: paths, names, versions, parameters.

    ``points`` are consecutive batches of ``batch_size`` grid points (the journal's unit of
    writing). ``hook`` names a function ``"module:function"`` called on the worker at
    ``task_start`` and ``before_save`` (a batch) with a dict of details: an observation and
    fault-injection point for tests and chaos drills (it may kill the process).
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
    batch_size: int = 20
    equity_points: int = 250
    hook: str | None = None


@dataclass(frozen=True, slots=True)
class PointSummary:
    """One grid point's result as the driver sees it (the full record is in the journal)."""

    symbol: str
    key: str
    params: Mapping[str, int | float]
    metrics: Mapping[str, Any]
    computed: bool


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
    read_s: float
    compute_s: float
    write_s: float
    total_s: float
    cpu_s: float = 0.0  # CPU time of this process during the task


def _load_hook(name: str | None) -> Hook:
    if not name:
        return lambda event, info: None
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


def downsample(timestamps_ns: np.ndarray, values: np.ndarray, limit: int) -> dict[str, list]:
    """At most ``limit`` evenly spaced points of a curve, always with its first and last."""
    n = values.shape[0]
    if n <= limit:
        idx = np.arange(n)
    else:
        idx = np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
    return {
        "timestamps_ns": [int(t) for t in timestamps_ns[idx]],
        "values": [float(v) for v in values[idx]],
    }


def _record(
    spec: TaskSpec,
    key: str,
    result: BacktestResult,
    timestamps_ns: np.ndarray,
    market: Mapping[str, Any],
    node_id: str,
) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "kind": "backtest-point",
        "engine": ENGINE_VERSION,
        "sweep_id": spec.sweep_id,
        "key": key,
        "strategy": result.strategy,
        "symbol": spec.symbol,
        "timeframe": result.timeframe,
        "params": dict(result.params),
        "metrics": result.metrics.to_dict(),
        "config": dict(spec.config),
        "market": dict(market),
        "equity": downsample(timestamps_ns, result.equity, spec.equity_points),
        "written": {**writer_info(), "node_id": node_id},
    }


def run_task(spec: TaskSpec) -> TaskOutcome:
    """Run one task (see the module docstring); returns small summaries and timings."""
    started = time.perf_counter()
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
    journal = SweepJournal(store)
    strategy = get_strategy(spec.strategy)
    config = BacktestConfig.from_dict(spec.config)
    keys = [point_key(p) for p in spec.points]
    size = spec.batch_size
    batches = [list(range(i, min(i + size, len(keys)))) for i in range(0, len(keys), size)]
    t = time.perf_counter()
    listed = {p.name for p in journal.batch_dir(spec.sweep_id, spec.symbol).glob("b-*.json")}
    stored: dict[str, dict[str, Any]] = {}
    todo: list[tuple[int, list[int]]] = []  # (batch number, indices of its points)
    for number, batch in enumerate(batches):
        path = journal.batch_path(spec.sweep_id, spec.symbol, [keys[i] for i in batch])
        if path.name in listed:
            stored.update((r["key"], r) for r in journal.load_batch(path))
        else:
            todo.append((number, batch))
    read_s = time.perf_counter() - t
    reused = len(stored)
    # Only tasks with work to do claim an attempt: a re-run that reuses everything leaves
    # no trace, and a retry shows as a second attempt.
    attempt = 0
    if todo:
        attempt = journal.begin_attempt(
            spec.sweep_id, spec.run_id, spec.task_key, {**who, "node_id": node_id}
        )
    hook(
        "task_start",
        {
            "task": spec.task_key,
            "attempt": attempt,
            "batches_to_do": len(todo),
            "pid": who["pid"],
            "root": spec.root,
        },
    )

    compute_s = write_s = 0.0
    computed: set[str] = set()
    if todo:
        t = time.perf_counter()
        table = store.market.read(
            spec.symbol, spec.timeframe, columns=["close"], version=spec.version
        )
        close = table.column("close").to_numpy()
        stamps = table.column("timestamp").cast(pa.int64()).to_numpy()
        read_s += time.perf_counter() - t
        market = {
            "symbol": spec.symbol,
            "timeframe": spec.timeframe,
            "version": spec.version,
            "bars": int(close.shape[0]),
            "start_ns": int(stamps[0]),
            "end_ns": int(stamps[-1]),
        }
        t = time.perf_counter()
        backtester = Backtester(close, timeframe=spec.timeframe, config=config)
        compute_s += time.perf_counter() - t
        for number, batch in todo:
            t = time.perf_counter()
            records = []
            for i in batch:
                result = backtester.run(strategy, spec.points[i])
                records.append(_record(spec, keys[i], result, stamps, market, node_id))
            compute_s += time.perf_counter() - t
            t = time.perf_counter()
            hook(
                "before_save",
                {
                    "task": spec.task_key,
                    "attempt": attempt,
                    "batch": number,
                    "root": spec.root,
                    "path": str(
                        journal.batch_path(spec.sweep_id, spec.symbol, [r["key"] for r in records])
                    ),
                    "records": records,
                },
            )
            _, saved, created = journal.save_batch(spec.sweep_id, spec.symbol, records)
            write_s += time.perf_counter() - t
            stored.update((r["key"], r) for r in saved)
            if created:
                computed.update(r["key"] for r in saved)
    points = tuple(
        PointSummary(
            symbol=spec.symbol,
            key=k,
            params=stored[k]["params"],
            metrics=stored[k]["metrics"],
            computed=k in computed,
        )
        for k in keys
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
        reused=reused,
        read_s=read_s,
        compute_s=compute_s,
        write_s=write_s,
        total_s=time.perf_counter() - started,
        cpu_s=time.process_time() - cpu_started,
    )
