"""Planning a sweep (on the driver, from manifests only): pin each symbol's market-data
version, expand the grid against the strategy's rules, cut tasks of one symbol and a chunk of
parameter sets, and derive the sweep id from everything that determines the results."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from efsray.backtest import BacktestConfig, ParamGrid, RejectedPoint, get_strategy, parse_grid
from efsray.backtest.engine import ENGINE_VERSION
from efsray.backtest.timeframe import parse_timeframe
from efsray.cluster.journal import canonical_json
from efsray.cluster.tasks import TaskSpec
from efsray.errors import ConfigError, NotFoundError
from efsray.store import Store

__all__ = ["SweepPlan", "plan_sweep"]


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
    pieces = _cut(syms, len(points), chunk_size, parallelism)
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
            points=tuple(dict(p) for p in points[offset : offset + size]),
            config=config.to_dict(),
            first_index=order[symbol] * len(points) + offset,
            sweep_size=len(syms) * len(points),
            batch_size=batch_size,
            hook=hook,
        )
        for symbol, n, offset, size in pieces
    ]
    return dataclasses.replace(plan, sweep_id=sweep_id, tasks=tuple(tasks))


def _cut(
    symbols: Sequence[str], points: int, chunk_size: int | None, parallelism: int
) -> list[tuple[str, int, int, int]]:
    """The tasks as (symbol, number, offset, size): each symbol's points in chunks of
    ``chunk_size``, in symbol order.

    Without a ``chunk_size``: enough tasks to keep every CPU busy (x3 for balance), each big
    enough that reading the symbol once is a small share of its time; and with several
    workers the last ``2 x parallelism`` tasks are cut in halves, so that the sweep ends
    with small tasks: a worker that runs out of work waits for the others' last task, and
    a small one ends sooner (a sweep of 20 symbols x 100 points on 2 workers: 24 tasks, the
    last 8 of 50 points)."""
    guided = chunk_size is None
    if chunk_size is None:
        wanted = max(len(symbols), 3 * max(parallelism, 1))
        per_symbol = max(1, math.ceil(wanted / len(symbols)))
        chunk_size = max(1, math.ceil(points / per_symbol))
    spans = [(s, offset, min(chunk_size, points - offset)) for s in symbols
             for offset in range(0, points, chunk_size)]  # fmt: skip
    if guided and parallelism > 1:
        tail = spans[-2 * parallelism :]
        spans = spans[: len(spans) - len(tail)]
        for symbol, offset, size in tail:
            half = math.ceil(size / 2)
            spans.append((symbol, offset, half))
            if size > half:
                spans.append((symbol, offset + half, size - half))
    numbers: dict[str, int] = {}
    pieces = []
    for symbol, offset, size in spans:
        numbers[symbol] = numbers.get(symbol, -1) + 1
        pieces.append((symbol, numbers[symbol], offset, size))
    return pieces
