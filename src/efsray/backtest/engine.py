"""The vectorized backtest: signals in, equity curve and metrics out.

Timing (no look-ahead): the signal decided on bar t's close is traded at that close and held
over bar t+1, so the position during bar t is ``signal[t-1]`` and the first bar is flat.
Bar t's return is ``close[t] / close[t-1] - 1``.

Costs: each change of position costs ``fee_bps + slippage_bps`` basis points of equity per
unit of position traded (going from long to short trades 2 units). A trade of ``u`` units
multiplies equity by ``(1 - k) ** u`` with ``k = (fee_bps + slippage_bps) / 10_000``; the
cost is taken at the close where the trade happens, i.e. in the first bar of the new position.
This makes the accounting exact and checkable::

    equity[T] / equity[0] = prod(1 + position * return) * (1 - k) ** turnover

and a round trip multiplies equity by ``(1 - k) ** 2``. There is no final liquidation: an
open position at the last bar is valued at the last close without an exit cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from efsray.backtest.indicators import Indicators
from efsray.backtest.metrics import Metrics, compute_metrics
from efsray.backtest.strategies import Strategy, get_strategy
from efsray.backtest.timeframe import CALENDAR_24_7, Calendar, Timeframe, parse_timeframe
from efsray.errors import ConfigError, InvalidDataError

__all__ = [
    "ENGINE_VERSION",
    "BacktestConfig",
    "BacktestResult",
    "Backtester",
    "run_backtest",
    "simulate",
]

# Bump when a change to the engine can change any result: sweeps are keyed by it.
ENGINE_VERSION = 1

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class BacktestConfig:
    """Costs and rules of a run. Costs are basis points (1 bp = 0.01%) per unit traded."""

    fee_bps: float = 1.0
    slippage_bps: float = 1.0
    allow_short: bool = True
    calendar: Calendar = CALENDAR_24_7

    def __post_init__(self) -> None:
        for name in ("fee_bps", "slippage_bps"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= 1000
            ):
                raise ConfigError(
                    f"{name}={value!r} is out of range; use 0 to 1000 basis points "
                    "(1 bp = 0.01% of the traded value)"
                )

    @property
    def cost_rate(self) -> float:
        """Fraction of equity lost per unit of position traded."""
        return (self.fee_bps + self.slippage_bps) / 10_000.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "fee_bps": self.fee_bps,
            "slippage_bps": self.slippage_bps,
            "allow_short": self.allow_short,
            "days_per_year": self.calendar.days_per_year,
            "hours_per_day": self.calendar.hours_per_day,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BacktestConfig:
        """The inverse of :meth:`to_dict` (missing keys take their defaults)."""
        default = cls()
        return cls(
            fee_bps=data.get("fee_bps", default.fee_bps),
            slippage_bps=data.get("slippage_bps", default.slippage_bps),
            allow_short=bool(data.get("allow_short", default.allow_short)),
            calendar=Calendar(
                days_per_year=data.get("days_per_year", default.calendar.days_per_year),
                hours_per_day=data.get("hours_per_day", default.calendar.hours_per_day),
            ),
        )


@dataclass(frozen=True, slots=True, eq=False)
class BacktestResult:
    """One run: what was run, the metrics, and the per-bar arrays (length = number of bars)."""

    strategy: str
    params: Mapping[str, int | float]
    timeframe: str
    config: BacktestConfig
    metrics: Metrics
    equity: FloatArray = field(repr=False)
    positions: npt.NDArray[np.int8] = field(repr=False)
    returns: FloatArray = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Strategy, parameters and metrics as plain JSON-safe values (NaN as None)."""
        return {
            "strategy": self.strategy,
            "params": dict(self.params),
            "timeframe": self.timeframe,
            "metrics": self.metrics.to_dict(),
        }


def _check_close(close: object) -> FloatArray:
    arr = np.asarray(close, dtype=np.float64)
    if arr.ndim != 1:
        raise InvalidDataError(f"close prices must be one-dimensional, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise InvalidDataError(
            f"a backtest needs at least 2 bars, got {arr.shape[0]}; read a longer range"
        )
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise InvalidDataError(
            f"close price at bar {i} is {float(arr[i])!r}; prices must be finite and > 0 "
            f"({int(bad.sum())} bad bars in all)"
        )
    return arr


class Backtester:
    """One close-price series, validated and prepared once, for many backtests.

    A sweep task runs a whole grid on one symbol: the returns are computed once, and the
    indicators (moving averages, rolling deviations, lookback returns) are cached across the
    parameter sets, so a 10 x 10 moving-average grid computes 20 averages, not 200.
    """

    def __init__(
        self,
        close: object,
        *,
        timeframe: str | Timeframe = "1d",
        config: BacktestConfig | None = None,
    ) -> None:
        self.config = config or BacktestConfig()
        self.timeframe = parse_timeframe(timeframe)
        self.close = _check_close(close)
        self.close.flags.writeable = False
        self.returns = np.zeros(self.close.shape[0])
        self.returns[1:] = self.close[1:] / self.close[:-1] - 1.0
        self.periods_per_year = self.timeframe.periods_per_year(self.config.calendar)
        self.indicators = Indicators(self.close)

    def run(self, strategy: str | Strategy, params: Mapping[str, int | float]) -> BacktestResult:
        """Run ``strategy`` with ``params``; see the module docstring."""
        strat = get_strategy(strategy)
        values = strat.validate(params)
        sig = strat.compute(self.indicators, **values)
        metrics, equity, pos, net = self.simulate(sig)
        return BacktestResult(
            strategy=strat.name,
            params=values,
            timeframe=self.timeframe.name,
            config=self.config,
            metrics=metrics,
            equity=equity,
            positions=pos,
            returns=net,
        )

    def simulate(
        self, signal: object
    ) -> tuple[Metrics, FloatArray, npt.NDArray[np.int8], FloatArray]:
        """Trade ``signal`` (target positions in {-1, 0, 1}, one per bar).

        Returns ``(metrics, equity, positions, net_returns)``; ``equity[0] == 1``.
        """
        sig = _check_signal(signal, self.close.shape)
        if not self.config.allow_short:
            sig = np.maximum(sig, 0).astype(np.int8)
        ret = self.returns
        n = ret.shape[0]
        pos = np.zeros(n, dtype=np.int8)
        pos[1:] = sig[:-1]
        traded = np.zeros(n, dtype=np.int8)
        traded[1:] = np.abs(np.diff(pos))  # 0, 1 or 2 units

        k = self.config.cost_rate
        keep = np.array([1.0, 1.0 - k, (1.0 - k) ** 2])  # (1 - k) ** units, by lookup
        factor = (1.0 + pos * ret) * keep[traded]
        # A short through a more-than-doubling bar would take equity below zero: it is
        # ruined at zero and stays there.
        ruined = factor <= 0.0
        first = int(np.argmax(ruined)) if ruined.any() else -1
        if first >= 0:
            factor[first] = 0.0
            factor[first + 1 :] = 1.0
            pos[first + 1 :] = 0
            traded[first + 1 :] = 0
        equity: FloatArray = np.cumprod(factor).astype(np.float64, copy=False)
        net = factor - 1.0
        if first >= 0:
            net[first + 1 :] = 0.0

        metrics = compute_metrics(
            equity=equity,
            net_returns=net,
            positions=pos,
            bar_factors=factor,
            traded=traded,
            cost_rate=k,
            periods_per_year=self.periods_per_year,
        )
        return metrics, equity, pos, net


def _check_signal(signal: object, shape: tuple[int, ...]) -> npt.NDArray[np.int8]:
    sig = np.asarray(signal)
    if sig.shape != shape:
        raise InvalidDataError(
            f"signal has shape {sig.shape} but close has {shape}; give one per bar"
        )
    if sig.dtype != np.int8:  # our strategies give int8 in {-1, 0, 1}; check anything else
        ok = np.isin(sig, (-1, 0, 1)).all() if sig.size else True
        if not ok:
            raise InvalidDataError("signal values must be -1, 0 or 1 (short, flat, long)")
        sig = sig.astype(np.int8)
    elif sig.size and (sig.min() < -1 or sig.max() > 1):
        raise InvalidDataError("signal values must be -1, 0 or 1 (short, flat, long)")
    return sig


def simulate(
    close: object,
    signal: object,
    *,
    timeframe: str | Timeframe = "1d",
    config: BacktestConfig | None = None,
) -> tuple[Metrics, FloatArray, npt.NDArray[np.int8], FloatArray]:
    """Trade ``signal`` (target positions in {-1, 0, 1}, one per bar) on ``close``.

    Returns ``(metrics, equity, positions, net_returns)``; ``equity[0] == 1``.
    """
    return Backtester(close, timeframe=timeframe, config=config).simulate(signal)


def run_backtest(
    close: object,
    strategy: str | Strategy,
    params: Mapping[str, int | float],
    *,
    timeframe: str | Timeframe = "1d",
    config: BacktestConfig | None = None,
) -> BacktestResult:
    """Run ``strategy`` with ``params`` on the ``close`` series; see the module docstring.

    For many parameter sets on one series, :class:`Backtester` shares the work between them.
    """
    return Backtester(close, timeframe=timeframe, config=config).run(strategy, params)
