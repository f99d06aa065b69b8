"""A small vectorized backtest engine (numpy only) and a synthetic market for demos.

- :func:`run_backtest` runs a named strategy with parameters over a close-price series;
  :func:`simulate` trades any {-1, 0, 1} signal. Positions decided on bar t's close act from
  bar t+1; fees and slippage are charged per unit traded.
- :data:`STRATEGIES`: ``ma_crossover``, ``momentum``, ``mean_reversion``, each with a
  validated parameter schema and constraints.
- :func:`parse_grid` reads ``"fast=5:50:5,slow=20:200:20"``; ``Strategy.expand(grid)`` keeps
  the valid points and reports the rest.
- :func:`generate_market`: correlated GBM with volatility regimes as consistent OHLCV bars.
- :func:`parse_timeframe` and :class:`Calendar` give the annualization of a bar length.
"""

from __future__ import annotations

from efsray.backtest.engine import (
    BacktestConfig,
    Backtester,
    BacktestResult,
    run_backtest,
    simulate,
)
from efsray.backtest.grid import ParamGrid, format_grid, parse_grid
from efsray.backtest.market import DEFAULT_SYMBOLS, MarketModel, generate_bars, generate_market
from efsray.backtest.metrics import Metrics
from efsray.backtest.strategies import (
    STRATEGIES,
    GridPlan,
    Param,
    RejectedPoint,
    Strategy,
    describe_strategies,
    get_strategy,
)
from efsray.backtest.timeframe import (
    CALENDAR_24_7,
    CALENDAR_US_EQUITY,
    Calendar,
    Timeframe,
    parse_timeframe,
)

__all__ = [
    "CALENDAR_24_7",
    "CALENDAR_US_EQUITY",
    "DEFAULT_SYMBOLS",
    "STRATEGIES",
    "BacktestConfig",
    "BacktestResult",
    "Backtester",
    "Calendar",
    "GridPlan",
    "MarketModel",
    "Metrics",
    "Param",
    "ParamGrid",
    "RejectedPoint",
    "Strategy",
    "Timeframe",
    "describe_strategies",
    "format_grid",
    "generate_bars",
    "generate_market",
    "get_strategy",
    "parse_grid",
    "parse_timeframe",
    "run_backtest",
    "simulate",
]
