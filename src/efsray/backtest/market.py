"""A synthetic but realistic market: correlated geometric Brownian motion with volatility
regimes, as consistent OHLCV bars, reproducible from a seed.

The model, per bar of length ``dt`` years:

- A market-wide regime follows a 2-state Markov chain (calm, stressed). Regime lengths are
  geometric with the given mean durations, so the chain switches with probability
  ``1 / mean_bars`` per bar. All symbols share it: stress is market-wide, as in real crises.
- Log returns are ``(mu - sigma**2 / 2) dt + sigma sqrt(dt) (rho Z_market + sqrt(1-rho**2) Z_own)``
  where ``sigma`` is the regime's volatility times a per-symbol scale and ``Z`` are standard
  normals: a GBM whose symbols correlate with ``rho``. ``mu`` is the long-run drift, plus,
  with ``trend_vol > 0``, a market-wide trend redrawn at each regime change (bull and bear
  spells that trend-following can catch; with ``trend_vol = 0`` prices are a pure GBM).
- The bar opens at the previous close (a 24/7 market has no overnight gap). High and low are
  drawn from the exact distribution of the maximum and minimum of a Brownian bridge between
  the open and the close (``(a + b +- sqrt((b - a)**2 - 2 s**2 ln U)) / 2`` in log space), so
  ``high >= max(open, close)`` and ``low <= min(open, close)`` by construction.
- Volume is log-normal around a daily volume, higher in stress and on large moves, with a mild
  daily cycle for intraday bars; never negative.

Each symbol's own noise comes from a random stream seeded by ``(seed, symbol)`` and the market
factor from ``seed`` alone: the same seed gives the same bars on any machine, and adding a
symbol does not change the others. Everything is vectorized numpy (no per-bar Python loop).
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from efsray.backtest.timeframe import parse_timeframe
from efsray.errors import ConfigError

__all__ = ["DEFAULT_SYMBOLS", "MarketModel", "generate_bars", "generate_market"]

DEFAULT_SYMBOLS = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL")
DEFAULT_START = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
_YEAR_SECONDS = 365.0 * 86_400.0
MAX_BARS = 20_000_000


@dataclass(frozen=True, slots=True)
class MarketModel:
    """Parameters of the synthetic market (annualized where it says so)."""

    drift: float = 0.08  # annual expected return mu
    calm_vol: float = 0.30  # annual volatility in the calm regime
    stressed_vol: float = 0.90  # annual volatility in the stressed regime
    mean_calm_days: float = 120.0
    mean_stressed_days: float = 25.0
    correlation: float = 0.5  # rho of every symbol with the market factor
    daily_volume: float = 2_000_000.0
    volume_dispersion: float = 0.35  # sigma of the log-normal volume noise
    trend_vol: float = 0.0  # std of a market-wide drift redrawn at every regime change

    def __post_init__(self) -> None:
        checks = [
            ("drift", -1.0 <= self.drift <= 1.0, "in [-1, 1] (0.08 = 8% a year)"),
            ("calm_vol", 0.0 < self.calm_vol <= 5.0, "in (0, 5] (0.3 = 30% a year)"),
            ("stressed_vol", 0.0 < self.stressed_vol <= 5.0, "in (0, 5]"),
            ("mean_calm_days", 0.0 < self.mean_calm_days <= 36_500, "in (0, 36500]"),
            ("mean_stressed_days", 0.0 < self.mean_stressed_days <= 36_500, "in (0, 36500]"),
            ("correlation", -1.0 <= self.correlation <= 1.0, "in [-1, 1]"),
            ("daily_volume", 0.0 <= self.daily_volume <= 1e15, "in [0, 1e15]"),
            ("volume_dispersion", 0.0 <= self.volume_dispersion <= 3.0, "in [0, 3]"),
            ("trend_vol", 0.0 <= self.trend_vol <= 5.0, "in [0, 5] (0.5 = +-50% a year)"),
        ]
        for name, ok, rule in checks:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and ok):
                raise ConfigError(f"market model {name}={value!r} is out of range; use {rule}")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _symbol_key(symbol: str) -> int:
    return zlib.crc32(symbol.encode("utf-8"))


def _regimes(
    n: int, p_leave_calm: float, p_leave_stress: float, seed: int
) -> npt.NDArray[np.bool_]:
    """A 2-state Markov chain of length n (True = stressed), built from geometric durations."""
    rng = _rng(seed, 1)
    stationary_stress = p_leave_calm / (p_leave_calm + p_leave_stress)
    state = bool(rng.random() < stationary_stress)
    out = np.empty(n, dtype=bool)
    filled = 0
    # Draw regime lengths in batches until the chain covers n bars.
    while filled < n:
        batch = max(16, int(2 * n * min(p_leave_calm, p_leave_stress)) + 16)
        calm_runs = rng.geometric(p_leave_calm, batch)
        stress_runs = rng.geometric(p_leave_stress, batch)
        if state:
            runs = np.column_stack((stress_runs, calm_runs)).ravel()
            states = np.tile([True, False], batch)
        else:
            runs = np.column_stack((calm_runs, stress_runs)).ravel()
            states = np.tile([False, True], batch)
        chunk = np.repeat(states, runs)[: n - filled]
        out[filled : filled + chunk.shape[0]] = chunk
        filled += chunk.shape[0]
        state = not bool(out[filled - 1]) if filled < n else state
    return out


def _check_symbols(symbols: Sequence[str]) -> tuple[str, ...]:
    if isinstance(symbols, str):
        symbols = [symbols]
    out = tuple(symbols)
    if not out:
        raise ConfigError("no symbols given; pass at least one symbol name")
    for s in out:
        if not isinstance(s, str) or not s:
            raise ConfigError(f"symbol {s!r} is not a non-empty string")
    if len(set(out)) != len(out):
        raise ConfigError(f"symbols {list(out)} contain duplicates; give each symbol once")
    return out


def _bar_count(bars: int | None, years: float | None, seconds: int) -> int:
    if (bars is None) == (years is None):
        raise ConfigError("give exactly one of bars= or years= for the market length")
    if bars is None:
        if not isinstance(years, int | float) or not 0 < years <= 100:
            raise ConfigError(f"years={years!r} is out of range; use a value in (0, 100]")
        n = round(years * _YEAR_SECONDS / seconds)
    else:
        n = bars
    if isinstance(n, bool) or not isinstance(n, int) or not 2 <= n <= MAX_BARS:
        raise ConfigError(f"the market needs 2 to {MAX_BARS:,} bars per symbol, got {n!r}")
    return n


def generate_market(
    symbols: Sequence[str] = DEFAULT_SYMBOLS,
    *,
    timeframe: str = "1h",
    bars: int | None = None,
    years: float | None = None,
    start: dt.datetime = DEFAULT_START,
    seed: int = 0,
    model: MarketModel | None = None,
) -> dict[str, pa.Table]:
    """OHLCV bars for every symbol, as pyarrow Tables keyed by symbol.

    Give the length as ``bars`` (per symbol) or ``years``. Columns: ``timestamp``
    (timestamp[ns, UTC], one bar per ``timeframe`` from ``start``), ``open``, ``high``,
    ``low``, ``close``, ``volume`` (float64).
    """
    syms = _check_symbols(symbols)
    tf = parse_timeframe(timeframe)
    n = _bar_count(bars, years, tf.seconds)
    model = model or MarketModel()
    if start.tzinfo is None:
        raise ConfigError(f"start={start!r} has no time zone; pass a UTC datetime")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed={seed!r} must be an integer >= 0")

    dt_years = tf.seconds / _YEAR_SECONDS
    bars_per_day = 86_400.0 / tf.seconds
    p_calm = min(1.0, 1.0 / max(model.mean_calm_days * bars_per_day, 1.0))
    p_stress = min(1.0, 1.0 / max(model.mean_stressed_days * bars_per_day, 1.0))
    stressed = _regimes(n, p_calm, p_stress, seed)
    market_noise = _rng(seed, 2).standard_normal(n)
    base_vol = np.where(stressed, model.stressed_vol, model.calm_vol)
    # Trends: every regime spell gets its own market-wide drift around the long-run one.
    spell = np.concatenate(([0], np.cumsum(stressed[1:] != stressed[:-1])))
    trend = model.drift + model.trend_vol * _rng(seed, 4).standard_normal(int(spell[-1]) + 1)
    mu = trend[spell]

    t0 = np.datetime64(start.astimezone(dt.UTC).replace(tzinfo=None), "ns")
    stamps = t0 + np.arange(n, dtype=np.int64) * np.timedelta64(tf.seconds, "s")
    ts = pa.array(stamps, type=pa.timestamp("ns", tz="UTC"))
    if tf.seconds < 86_400:
        hour = (stamps - stamps.astype("datetime64[D]")).astype("timedelta64[s]").astype(
            np.float64
        ) / 3600.0
        cycle = 1.0 + 0.35 * np.cos(2.0 * np.pi * (hour - 15.0) / 24.0)
    else:
        cycle = np.ones(n)

    out: dict[str, pa.Table] = {}
    for symbol in syms:
        rng = _rng(seed, 3, _symbol_key(symbol))
        vol_scale = float(rng.uniform(0.7, 1.4))
        start_price = float(np.exp(rng.uniform(np.log(20.0), np.log(500.0))))
        sigma = base_vol * vol_scale
        rho = model.correlation
        z = rho * market_noise + math.sqrt(1.0 - rho * rho) * rng.standard_normal(n)
        log_ret = (mu - 0.5 * sigma**2) * dt_years + sigma * math.sqrt(dt_years) * z
        log_ret[0] = 0.0
        log_close = math.log(start_price) + np.cumsum(log_ret)
        log_open = np.empty(n)
        log_open[0] = log_close[0]
        log_open[1:] = log_close[:-1]
        # Extremes of a Brownian bridge from open to close with the bar's variance.
        var = sigma**2 * dt_years
        span = log_close - log_open
        u = 1.0 - rng.random(n)  # in (0, 1]: log(u) is finite
        v = 1.0 - rng.random(n)
        log_high = 0.5 * (log_open + log_close + np.sqrt(span**2 - 2.0 * var * np.log(u)))
        log_low = 0.5 * (log_open + log_close - np.sqrt(span**2 - 2.0 * var * np.log(v)))
        close = np.exp(log_close)
        open_ = np.exp(log_open)
        high = np.maximum(np.exp(log_high), np.maximum(open_, close))
        low = np.minimum(np.exp(log_low), np.minimum(open_, close))
        surprise = np.abs(z)
        volume = (
            model.daily_volume
            / bars_per_day
            * cycle
            * np.where(stressed, 1.8, 1.0)
            * (0.6 + 0.4 * surprise)
            * np.exp(model.volume_dispersion * rng.standard_normal(n))
        )
        volume = np.round(volume)
        out[symbol] = pa.table(
            {
                "timestamp": ts,
                "open": open_,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
            }
        )
    return out


def generate_bars(
    symbol: str,
    *,
    timeframe: str = "1h",
    bars: int | None = None,
    years: float | None = None,
    start: dt.datetime = DEFAULT_START,
    seed: int = 0,
    model: MarketModel | None = None,
) -> pa.Table:
    """One symbol's bars; identical to that symbol's table from :func:`generate_market`."""
    return generate_market(
        [symbol], timeframe=timeframe, bars=bars, years=years, start=start, seed=seed, model=model
    )[symbol]
