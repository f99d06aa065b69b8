"""The synthetic market: consistent OHLCV, reproducible, with regimes and correlation."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.backtest.market import (
    DEFAULT_SYMBOLS,
    MarketModel,
    _regimes,
    generate_bars,
    generate_market,
)
from efsray.errors import ConfigError


@pytest.fixture(scope="module")
def hourly() -> dict[str, pa.Table]:
    return generate_market(timeframe="1h", years=2, seed=11)


def test_schema_and_timestamps(hourly: dict[str, pa.Table]) -> None:
    assert list(hourly) == list(DEFAULT_SYMBOLS)
    for table in hourly.values():
        assert table.column_names == ["timestamp", "open", "high", "low", "close", "volume"]
        assert table.schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
        assert table.num_rows == 2 * 365 * 24
        ts = table["timestamp"].to_numpy().astype("datetime64[ns]").astype(np.int64)
        assert ts[0] == np.datetime64("2021-01-01T00:00", "ns").astype(np.int64)
        assert (np.diff(ts) == 3600 * 10**9).all()


def test_bars_are_consistent(hourly: dict[str, pa.Table]) -> None:
    for table in hourly.values():
        o, h, low, c, v = (table[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
        for arr in (o, h, low, c, v):
            assert np.isfinite(arr).all()
        assert (h >= np.maximum(o, c)).all()
        assert (low <= np.minimum(o, c)).all()
        assert (low > 0).all()
        assert (v >= 0).all() and (v == np.round(v)).all()
        assert (o[1:] == c[:-1]).all()  # 24/7: each bar opens at the previous close
        # ranges are real: highs strictly above the body on most bars
        assert np.mean(h > np.maximum(o, c)) > 0.9


def test_reproducible_from_the_seed() -> None:
    a = generate_market(["X", "Y"], timeframe="5m", bars=5000, seed=3)
    b = generate_market(["X", "Y"], timeframe="5m", bars=5000, seed=3)
    c = generate_market(["X", "Y"], timeframe="5m", bars=5000, seed=4)
    assert a["X"].equals(b["X"]) and a["Y"].equals(b["Y"])
    assert not a["X"].equals(c["X"])
    # a symbol's bars do not depend on which other symbols are generated with it
    assert generate_bars("Y", timeframe="5m", bars=5000, seed=3).equals(a["Y"])


def test_regime_chain_has_the_requested_durations() -> None:
    p_leave_calm, p_leave_stress = 1 / 200, 1 / 50
    states = _regimes(400_000, p_leave_calm, p_leave_stress, seed=5)
    share = states.mean()
    assert share == pytest.approx(0.2, abs=0.03)  # stationary: 50 / (200 + 50)
    edges = np.flatnonzero(np.diff(states.astype(np.int8))) + 1
    runs = np.diff(edges)
    run_states = states[edges[:-1]]
    assert runs[run_states].mean() == pytest.approx(50, rel=0.15)
    assert runs[~run_states].mean() == pytest.approx(200, rel=0.15)


def test_stress_regime_is_more_volatile_and_symbols_correlate() -> None:
    model = MarketModel(calm_vol=0.2, stressed_vol=0.8, correlation=0.6, mean_calm_days=30)
    market = generate_market(["A", "B"], timeframe="1h", years=4, seed=2, model=model)
    ra = np.diff(np.log(market["A"]["close"].to_numpy()))
    rb = np.diff(np.log(market["B"]["close"].to_numpy()))
    # correlation of two symbols loading rho on one factor: rho**2
    assert np.corrcoef(ra, rb)[0, 1] == pytest.approx(0.36, abs=0.04)
    # fat tails from the regime mixture (a plain GBM has kurtosis 3)
    kurtosis = ((ra - ra.mean()) ** 4).mean() / ra.var() ** 2
    assert kurtosis > 4.0
    # a rolling volatility estimate swings by roughly the ratio of the regime volatilities
    rolling = np.sqrt(np.convolve(ra**2, np.ones(24 * 5) / (24 * 5), mode="valid"))
    assert np.quantile(rolling, 0.95) / np.quantile(rolling, 0.05) > 2.5


def variance_ratio(close: np.ndarray, horizon: int) -> float:
    r = np.diff(np.log(close))
    long = np.diff(np.log(close[::horizon]))
    return float(long.var() / (horizon * r.var()))


def test_trends_make_returns_persistent_and_pure_gbm_does_not() -> None:
    """With trend_vol, each regime spell has its own drift: returns over a month vary more
    than a month of independent hourly returns would (variance ratio > 1); a pure GBM stays
    near 1."""
    base = {"calm_vol": 0.1, "stressed_vol": 0.1, "mean_calm_days": 60, "mean_stressed_days": 60}
    trending = generate_bars(
        "T", timeframe="1h", years=20, seed=3, model=MarketModel(trend_vol=1.0, **base)
    )
    plain = generate_bars("T", timeframe="1h", years=20, seed=3, model=MarketModel(**base))
    assert variance_ratio(trending["close"].to_numpy(), 720) > 2.0
    assert 0.6 < variance_ratio(plain["close"].to_numpy(), 720) < 1.5


def test_daily_bars_have_no_intraday_cycle() -> None:
    table = generate_bars("D", timeframe="1d", bars=100, seed=1)
    assert table.num_rows == 100
    ts = table["timestamp"].to_numpy().astype("datetime64[ns]")
    assert (np.diff(ts) == np.timedelta64(1, "D")).all()


def test_start_time_is_respected() -> None:
    start = dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    table = generate_bars("S", timeframe="1m", bars=10, start=start)
    first = table["timestamp"][0].as_py()
    assert first == start
    assert first.astimezone(dt.UTC).hour == 14


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"bars": 10, "years": 1}, "exactly one of bars= or years="),
        ({}, "exactly one of bars= or years="),
        ({"bars": 1}, "2 to"),
        ({"bars": 10**9}, "2 to"),
        ({"years": 0}, "years=0 is out of range"),
        ({"years": 1, "timeframe": "1x"}, "unknown unit"),
        ({"bars": 10, "symbols": []}, "no symbols"),
        ({"bars": 10, "symbols": ["A", "A"]}, "duplicates"),
        ({"bars": 10, "symbols": [""]}, "non-empty"),
        ({"bars": 10, "seed": -1}, "seed=-1"),
        ({"bars": 10, "start": dt.datetime(2021, 1, 1)}, "no time zone"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        generate_market(**kwargs)


@pytest.mark.parametrize(
    "field",
    ["drift", "calm_vol", "stressed_vol", "mean_calm_days", "correlation", "volume_dispersion"],
)
def test_model_validation(field: str) -> None:
    with pytest.raises(ConfigError, match=f"market model {field}="):
        MarketModel(**{field: float("nan")})
    with pytest.raises(ConfigError, match=f"market model {field}="):
        MarketModel(**{field: 1e9})


@given(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["drift", "calm_vol", "correlation", "daily_volume", "mean_stressed_days"]),
)
def test_model_validator_accepts_or_explains(value: float, field: str) -> None:
    try:
        model = MarketModel(**{field: value})
    except ConfigError as exc:
        assert field in str(exc)
        return
    assert np.isfinite(getattr(model, field))
