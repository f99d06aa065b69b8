"""Trading strategies: a signal function of the closes plus a validated parameter schema.

A strategy's signal at bar t is decided on bar t's close, from closes 0..t only, and is a
target position in {-1, 0, +1} (short, flat, long). The engine applies it from bar t+1 on.
Parameters are declared once (:class:`Param`: type, default, bounds) together with the
constraints between them (``fast < slow``), so the CLI, the grid expansion and the engine
reject the same bad values with the same message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from efsray.backtest.grid import ParamGrid
from efsray.backtest.indicators import Indicators
from efsray.errors import ConfigError

__all__ = [
    "STRATEGIES",
    "Constraint",
    "GridPlan",
    "Param",
    "RejectedPoint",
    "Strategy",
    "get_strategy",
]

Signal = npt.NDArray[np.int8]
Params = Mapping[str, int | float]


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter: its type (``int`` or ``float``), default (None: required) and bounds."""

    name: str
    kind: type
    default: int | float | None
    minimum: float
    maximum: float
    help: str

    def coerce(self, value: object, strategy: str) -> int | float:
        where = f"{strategy} parameter {self.name}={value!r}"
        if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
            raise ConfigError(f"{where} is not a number; {self.help}")
        number = float(value)
        if not math.isfinite(number):
            raise ConfigError(f"{where} is not finite; {self.help}")
        if self.kind is int:
            if number != int(number):
                raise ConfigError(f"{where} must be a whole number; {self.help}")
            out: int | float = int(number)
        else:
            out = number
        if not self.minimum <= out <= self.maximum:
            raise ConfigError(
                f"{where} is out of range [{_num(self.minimum)}, {_num(self.maximum)}]; {self.help}"
            )
        return out


@dataclass(frozen=True, slots=True)
class Constraint:
    """A rule between parameters, e.g. ``fast < slow``, with the text shown when it fails."""

    text: str
    holds: Callable[[Params], bool]


@dataclass(frozen=True, slots=True)
class RejectedPoint:
    params: Mapping[str, int | float]
    reason: str


@dataclass(frozen=True, slots=True)
class GridPlan:
    """The valid parameter sets of a grid, and the rejected ones with the reason for each."""

    strategy: str
    points: tuple[Mapping[str, int | float], ...]
    rejected: tuple[RejectedPoint, ...]

    def summary(self) -> str:
        text = f"{len(self.points)} parameter sets"
        if self.rejected:
            reasons: dict[str, int] = {}
            for r in self.rejected:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
            detail = "; ".join(f"{n} violate {reason}" for reason, n in reasons.items())
            text += f" ({len(self.rejected)} skipped: {detail})"
        return text


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    description: str
    params: tuple[Param, ...]
    constraints: tuple[Constraint, ...]
    compute: Callable[..., Signal]

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def validate(self, params: Params) -> dict[str, int | float]:
        """Fill defaults, coerce types, check bounds and constraints; raise ConfigError."""
        values = self._complete(params)
        broken = self.violated(values)
        if broken is not None:
            raise ConfigError(
                f"{self.name} parameters {_show(values)} violate {broken}; "
                "choose values that satisfy it"
            )
        return values

    def violated(self, values: Params) -> str | None:
        """The text of the first constraint ``values`` break, or None."""
        for constraint in self.constraints:
            if not constraint.holds(values):
                return constraint.text
        return None

    def signal(self, close: npt.NDArray[np.float64] | Indicators, params: Params) -> Signal:
        """Target positions in {-1, 0, 1}, one per bar, decided on that bar's close.

        ``close`` may be an :class:`Indicators` of the series, whose cached indicators are
        then shared with other parameter sets.
        """
        values = self.validate(params)
        if not isinstance(close, Indicators):
            close = Indicators(np.asarray(close, dtype=np.float64))
        return self.compute(close, **values)

    def expand(self, grid: ParamGrid) -> GridPlan:
        """Every valid point of ``grid`` (defaults filled in), the rest rejected with reasons.

        Unknown parameter names and out-of-range values are errors (a typo should not run a
        sweep of defaults); points that merely break a constraint (``fast >= slow``) are
        skipped and reported. Raises ConfigError when no point survives.
        """
        unknown = [n for n in grid.names if n not in self.param_names]
        if unknown:
            raise ConfigError(
                f"strategy {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are {self._describe_params()}"
            )
        for name, axis in grid.axes:
            param = next(p for p in self.params if p.name == name)
            for value in axis:
                param.coerce(value, self.name)
        points: list[Mapping[str, int | float]] = []
        rejected: list[RejectedPoint] = []
        for raw in grid.points():
            values = self._complete(raw)
            broken = self.violated(values)
            if broken is None:
                points.append(MappingProxyType(values))
            else:
                rejected.append(RejectedPoint(MappingProxyType(values), broken))
        if not points:
            raise ConfigError(
                f"every one of the {grid.size} grid points breaks a rule of {self.name!r} "
                f"({rejected[0].reason}, e.g. {_show(rejected[0].params)}); adjust the grid"
            )
        return GridPlan(self.name, tuple(points), tuple(rejected))

    def _complete(self, params: Params) -> dict[str, int | float]:
        if not isinstance(params, Mapping):
            raise ConfigError(f"{self.name} parameters must be a mapping, got {params!r}")
        unknown = [k for k in params if k not in self.param_names]
        if unknown:
            raise ConfigError(
                f"strategy {self.name!r} has no parameter {', '.join(map(repr, unknown))}; "
                f"its parameters are {self._describe_params()}"
            )
        out: dict[str, int | float] = {}
        for param in self.params:
            if param.name in params:
                out[param.name] = param.coerce(params[param.name], self.name)
            elif param.default is not None:
                out[param.name] = param.default
            else:
                raise ConfigError(
                    f"strategy {self.name!r} needs parameter {param.name!r}; {param.help}"
                )
        return out

    def _describe_params(self) -> str:
        parts = []
        for p in self.params:
            default = "required" if p.default is None else f"default {p.default}"
            parts.append(f"{p.name} ({p.kind.__name__}, {default})")
        return ", ".join(parts)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(values: Params) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


# --- signal functions -------------------------------------------------------------------


def _sign(x: npt.NDArray[np.float64]) -> Signal:
    """-1/0/+1 by sign; NaN (warm-up bars) is 0: no position until the indicator exists."""
    out = np.zeros(x.shape[0], dtype=np.int8)
    out[x > 0] = 1
    out[x < 0] = -1
    return out


def ma_crossover(ind: Indicators, *, fast: int, slow: int) -> Signal:
    """Long while the fast moving average is above the slow one, short while below."""
    return _sign(ind.sma(fast) - ind.sma(slow))


def momentum(ind: Indicators, *, lookback: int, threshold: float) -> Signal:
    """Long after a rise of more than ``threshold`` over ``lookback`` bars, short after a fall
    of more than ``threshold``, flat in between."""
    change = ind.pct_change(lookback)
    out = np.zeros(ind.n, dtype=np.int8)
    out[change > threshold] = 1
    out[change < -threshold] = -1
    return out


def mean_reversion(ind: Indicators, *, window: int, entry_z: float, exit_z: float) -> Signal:
    """Bollinger-style mean reversion with hysteresis.

    z = (close - rolling mean) / rolling std over ``window`` bars. Go long when
    z <= -entry_z, short when z >= entry_z, flat once |z| <= exit_z, otherwise keep the
    current position. A window with zero variance has z = 0 (flat).
    """
    close = ind.close
    mean, std = ind.mean_std(window)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(std > 0, (close - mean) / np.where(std > 0, std, 1.0), 0.0)
    valid = ~np.isnan(mean)
    # Each bar either sets a new state (event) or keeps the last one: forward-fill events.
    state = np.zeros(close.shape[0], dtype=np.int8)
    has_event = np.zeros(close.shape[0], dtype=bool)
    exit_now = valid & (np.abs(z) <= exit_z)
    long_now = valid & (z <= -entry_z)
    short_now = valid & (z >= entry_z)
    has_event[exit_now | long_now | short_now] = True
    state[long_now] = 1
    state[short_now] = -1
    # Bars before the first full window: flat.
    has_event[~valid] = True
    idx = np.where(has_event, np.arange(close.shape[0]), 0)
    np.maximum.accumulate(idx, out=idx)
    return state[idx]


_INT_MAX = 1_000_000.0

STRATEGIES: Mapping[str, Strategy] = MappingProxyType(
    {
        "ma_crossover": Strategy(
            name="ma_crossover",
            description="moving-average crossover: long when SMA(fast) > SMA(slow), else short",
            params=(
                Param("fast", int, None, 1, _INT_MAX, "the fast SMA window in bars, >= 1"),
                Param("slow", int, None, 2, _INT_MAX, "the slow SMA window in bars, > fast"),
            ),
            constraints=(Constraint("fast < slow", lambda p: p["fast"] < p["slow"]),),
            compute=ma_crossover,
        ),
        "momentum": Strategy(
            name="momentum",
            description="time-series momentum: follow the sign of the lookback return",
            params=(
                Param("lookback", int, None, 1, _INT_MAX, "the lookback in bars, >= 1"),
                Param(
                    "threshold",
                    float,
                    0.0,
                    0.0,
                    10.0,
                    "the minimum absolute lookback return to take a position, >= 0 (0.01 = 1%)",
                ),
            ),
            constraints=(),
            compute=momentum,
        ),
        "mean_reversion": Strategy(
            name="mean_reversion",
            description="mean reversion on the rolling z-score: fade moves beyond entry_z",
            params=(
                Param("window", int, None, 2, _INT_MAX, "the z-score window in bars, >= 2"),
                Param("entry_z", float, 2.0, 0.0, 100.0, "the |z| that opens a position, > 0"),
                Param("exit_z", float, 0.5, 0.0, 100.0, "the |z| that closes it, < entry_z"),
            ),
            constraints=(Constraint("exit_z < entry_z", lambda p: p["exit_z"] < p["entry_z"]),),
            compute=mean_reversion,
        ),
    }
)


def get_strategy(name: str | Strategy) -> Strategy:
    """The strategy called ``name``; ConfigError listing the known ones otherwise."""
    if isinstance(name, Strategy):
        return name
    strategy = STRATEGIES.get(name) if isinstance(name, str) else None
    if strategy is None:
        raise ConfigError(f"unknown strategy {name!r}; choose one of {_names(STRATEGIES)}")
    return strategy


def _names(items: Iterable[str]) -> str:
    return ", ".join(sorted(items))


def describe_strategies() -> list[dict[str, Any]]:
    """JSON-safe description of every strategy and its parameters (for ``--help`` and docs)."""
    return [
        {
            "name": s.name,
            "description": s.description,
            "params": [
                {"name": p.name, "type": p.kind.__name__, "default": p.default, "help": p.help}
                for p in s.params
            ],
            "constraints": [c.text for c in s.constraints],
        }
        for s in STRATEGIES.values()
    ]
