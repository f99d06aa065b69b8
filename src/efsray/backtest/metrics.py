"""Performance metrics of one equity curve.

Conventions (all from per-bar net returns ``r`` = bars 1..n-1, risk-free rate 0):

- ``total_return = equity[-1] / equity[0] - 1``
- ``annualized_return = (equity[-1] / equity[0]) ** (periods_per_year / (n - 1)) - 1`` (CAGR)
- ``volatility = std(r, ddof=1) * sqrt(periods_per_year)``
- ``sharpe = mean(r) / std(r, ddof=1) * sqrt(periods_per_year)``
- ``sortino = mean(r) / sqrt(mean(min(r, 0) ** 2)) * sqrt(periods_per_year)``
- ``max_drawdown``: the largest fall from a running peak, as a positive fraction
- a *trade* is a run of bars with the same non-zero position; its return includes its entry
  cost and, when it was closed, its exit cost; ``win_rate`` is the share of trades with a
  return > 0; ``turnover`` is the units of position traded (long to short counts 2)
- ``exposure``: the share of bars with a position; ``cost_drag``: the share of equity lost to
  fees and slippage, ``1 - (1 - k) ** turnover``

A ratio whose denominator is zero is 0.0 when its numerator is zero too (a flat or constant
series) and NaN (undefined; ``None`` in JSON) otherwise. ``win_rate`` is NaN with no trades.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Metrics", "compute_metrics"]

FloatArray = npt.NDArray[np.float64]
METRIC_NAMES = (
    "total_return",
    "annualized_return",
    "volatility",
    "sharpe",
    "sortino",
    "max_drawdown",
    "win_rate",
    "trades",
    "turnover",
    "exposure",
    "cost_drag",
    "bars",
)


@dataclass(frozen=True, slots=True)
class Metrics:
    total_return: float
    annualized_return: float
    volatility: float
    sharpe: float
    sortino: float
    max_drawdown: float
    win_rate: float
    trades: int
    turnover: float
    exposure: float
    cost_drag: float
    bars: int

    def to_dict(self) -> dict[str, Any]:
        """Plain Python numbers; NaN and infinities become None (JSON has neither)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        values: dict[str, Any] = {}
        for name in METRIC_NAMES:
            value = data.get(name)
            if name in ("trades", "bars"):
                values[name] = int(value) if value is not None else 0
            else:
                values[name] = float(value) if value is not None else math.nan
        return cls(**values)


def _ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return 0.0 if num == 0 else math.nan


def compute_metrics(
    *,
    equity: FloatArray,
    net_returns: FloatArray,
    positions: npt.NDArray[np.int8],
    bar_factors: FloatArray,
    traded: npt.NDArray[np.int8],
    cost_rate: float,
    periods_per_year: float,
) -> Metrics:
    """Metrics of a simulated run; see the module docstring for the definitions."""
    n = int(equity.shape[0])
    final = float(equity[-1])
    periods = n - 1
    r = net_returns[1:]
    ann_factor = math.sqrt(periods_per_year)

    if final <= 0:
        annualized = -1.0
    else:
        log_growth = math.log(final) * periods_per_year / periods
        annualized = math.inf if log_growth > 700 else math.expm1(log_growth)

    if r.shape[0] >= 2:
        mean = float(np.mean(r))
        std = float(np.std(r, ddof=1))
        volatility = std * ann_factor
        sharpe = _ratio(mean, std) * ann_factor
        downside = float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)))
        sortino = _ratio(mean, downside) * ann_factor
    else:
        volatility = sharpe = sortino = math.nan

    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        drawdown = np.where(peak > 0, 1.0 - equity / peak, 1.0)
    max_drawdown = float(drawdown.max())

    trade_returns = _trade_returns(positions, bar_factors, traded, cost_rate)
    trades = int(trade_returns.shape[0])
    win_rate = float(np.mean(trade_returns > 0)) if trades else math.nan
    turnover = float(traded.sum(dtype=np.int64))

    return Metrics(
        total_return=final - 1.0,
        annualized_return=annualized,
        volatility=volatility,
        sharpe=sharpe,
        sortino=sortino,
        max_drawdown=max_drawdown,
        win_rate=win_rate,
        trades=trades,
        turnover=turnover,
        exposure=float(np.mean(positions[1:] != 0)),
        cost_drag=-math.expm1(turnover * math.log1p(-cost_rate)) if cost_rate < 1 else 1.0,
        bars=n,
    )


def _trade_returns(
    positions: npt.NDArray[np.int8],
    bar_factors: FloatArray,
    traded: npt.NDArray[np.int8],
    cost_rate: float,
) -> FloatArray:
    """Net return of each trade (run of bars with one non-zero position), in order."""
    keep = 1.0 - cost_rate
    # Take the costs out of the per-bar factors; put each trade's own entry and exit back.
    gross = bar_factors / np.array([1.0, keep, keep * keep])[traded.astype(np.intp)]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(positions) != 0) + 1))
    seg_pos = positions[starts]
    seg_gross = np.multiply.reduceat(gross, starts)
    units = np.abs(seg_pos).astype(np.float64)
    closed = np.ones(starts.shape[0], dtype=bool)
    closed[-1] = False
    ratio = seg_gross * keep**units * np.where(closed, keep**units, 1.0)
    return (ratio - 1.0)[seg_pos != 0]
