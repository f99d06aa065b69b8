"""The backtest engine against hand-computed cases, accounting identities and a naive loop."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.backtest import (
    CALENDAR_US_EQUITY,
    STRATEGIES,
    BacktestConfig,
    run_backtest,
    simulate,
)
from efsray.errors import ConfigError, InvalidDataError

FREE = BacktestConfig(fee_bps=0.0, slippage_bps=0.0)


def random_walk(n: int, seed: int, vol: float = 0.01, start: float = 100.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return start * np.exp(np.cumsum(rng.normal(0.0, vol, n)))


def random_signal(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Persistent positions (like real strategies), not a coin flip per bar.
    changes = rng.random(n) < 0.1
    values = rng.integers(-1, 2, n)
    idx = np.maximum.accumulate(np.where(changes, np.arange(n), 0))
    return values[idx].astype(np.int8)


# --- hand-computed ----------------------------------------------------------------------


def test_hand_computed_case_with_fees() -> None:
    close = [100.0, 110.0, 99.0, 99.0, 108.9]
    signal = [1, 1, 0, -1, 0]  # decided on each close, acts from the next bar
    cfg = BacktestConfig(fee_bps=10.0, slippage_bps=0.0)  # k = 0.001 per unit traded
    m, equity, pos, net = simulate(close, signal, timeframe="1d", config=cfg)

    assert pos.tolist() == [0, 1, 1, 0, -1]
    k = 0.001
    # bar returns: 0, +10%, -10%, 0, +10%; traded units: 0, 1, 0, 1, 1
    expected_factors = [1.0, 1.1 * (1 - k), 0.9, 1.0 * (1 - k), 0.9 * (1 - k)]
    np.testing.assert_allclose(equity, np.cumprod(expected_factors), rtol=1e-14)
    np.testing.assert_allclose(net, np.array(expected_factors) - 1, rtol=1e-12, atol=1e-15)
    assert m.turnover == 3.0
    assert m.trades == 2  # the long (bars 1-2) and the open short (bar 4)
    assert m.win_rate == 0.0  # long: 1.1 * 0.9 * 0.999**2 < 1; short: 0.9 * 0.999 < 1
    assert m.total_return == pytest.approx(1.1 * 0.9 * 0.9 * (1 - k) ** 3 - 1, rel=1e-12)
    peak = 1.1 * (1 - k)
    assert m.max_drawdown == pytest.approx(1 - equity[-1] / peak, rel=1e-12)
    assert m.exposure == pytest.approx(3 / 4)
    assert m.cost_drag == pytest.approx(1 - (1 - k) ** 3, rel=1e-12)
    assert m.bars == 5


def test_hand_computed_winning_trade_and_win_rate() -> None:
    close = [10.0, 11.0, 12.1, 12.1, 10.89, 9.801]
    signal = [1, 1, 0, -1, -1, 0]
    m, equity, pos, _ = simulate(close, signal, timeframe="1d", config=FREE)
    assert pos.tolist() == [0, 1, 1, 0, -1, -1]
    # long: +10% twice -> +21%; short: price -10% twice -> 1.1 * 1.1 - 1 = +21%
    assert m.trades == 2
    assert m.win_rate == 1.0
    assert equity[-1] == pytest.approx(1.21 * 1.21, rel=1e-12)
    assert m.max_drawdown == 0.0


def test_sharpe_sortino_volatility_match_textbook_formulas() -> None:
    rets = [0.01, -0.02, 0.015, 0.003, -0.007, 0.02, -0.001]
    close = np.concatenate(([100.0], 100.0 * np.cumprod(1 + np.array(rets))))
    signal = np.ones(close.shape[0], dtype=np.int8)
    m, _, _, net = simulate(close, signal, timeframe="1d", config=FREE)
    np.testing.assert_allclose(net[1:], rets, rtol=1e-9)
    ppy = 365.0
    mean, sd = statistics.fmean(rets), statistics.stdev(rets)
    assert m.sharpe == pytest.approx(mean / sd * math.sqrt(ppy), rel=1e-9)
    assert m.volatility == pytest.approx(sd * math.sqrt(ppy), rel=1e-9)
    downside = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / len(rets))
    assert m.sortino == pytest.approx(mean / downside * math.sqrt(ppy), rel=1e-9)


def test_cagr_of_ten_percent_a_year_on_daily_bars() -> None:
    close = 100.0 * 1.1 ** (np.arange(366) / 365.0)
    signal = np.ones(366, dtype=np.int8)
    m, _, _, _ = simulate(close, signal, timeframe="1d", config=FREE)
    # the position starts at bar 1, so it earns bars 1..365: 365 days of the 10%/year path
    assert m.total_return == pytest.approx(1.1 ** (365 / 365) - 1, rel=1e-9)
    assert m.annualized_return == pytest.approx(0.1, rel=1e-9)


def test_annualization_follows_the_timeframe_and_calendar() -> None:
    rets = np.random.default_rng(3).normal(0.0005, 0.01, 400)
    close = np.concatenate(([100.0], 100 * np.cumprod(1 + rets)))
    signal = np.ones(close.shape[0], dtype=np.int8)
    daily, *_ = simulate(close, signal, timeframe="1d", config=FREE)
    hourly, *_ = simulate(close, signal, timeframe="1h", config=FREE)
    equity_hourly, *_ = simulate(
        close,
        signal,
        timeframe="1h",
        config=BacktestConfig(fee_bps=0, slippage_bps=0, calendar=CALENDAR_US_EQUITY),
    )
    assert hourly.sharpe == pytest.approx(daily.sharpe * math.sqrt(24), rel=1e-12)
    assert equity_hourly.sharpe == pytest.approx(
        daily.sharpe * math.sqrt(252 * 6.5 / 365), rel=1e-12
    )
    assert daily.total_return == hourly.total_return


# --- identities ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_zero_costs_equity_is_cumprod_of_position_times_return(seed: int) -> None:
    close = random_walk(2000, seed)
    signal = random_signal(2000, seed + 100)
    _, equity, pos, _ = simulate(close, signal, config=FREE)
    ret = np.concatenate(([0.0], close[1:] / close[:-1] - 1))
    np.testing.assert_array_equal(pos[1:], signal[:-1])
    np.testing.assert_allclose(equity, np.cumprod(1 + pos * ret), rtol=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_costs_multiply_equity_by_one_minus_k_per_unit_traded(seed: int) -> None:
    close = random_walk(2000, seed)
    signal = random_signal(2000, seed + 7)
    free, eq_free, *_ = simulate(close, signal, config=FREE)
    cfg = BacktestConfig(fee_bps=3.0, slippage_bps=2.0)
    paid, eq_paid, *_ = simulate(close, signal, config=cfg)
    assert paid.turnover == free.turnover > 0
    k = 5e-4
    assert eq_paid[-1] == pytest.approx(eq_free[-1] * (1 - k) ** free.turnover, rel=1e-10)
    assert paid.cost_drag == pytest.approx(1 - (1 - k) ** free.turnover, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_doubling_fees_lowers_log_return_by_the_expected_amount(seed: int) -> None:
    close = random_walk(3000, seed)
    result_1 = run_backtest(close, "ma_crossover", {"fast": 5, "slow": 30}, config=_fees(4.0))
    result_2 = run_backtest(close, "ma_crossover", {"fast": 5, "slow": 30}, config=_fees(8.0))
    turnover = result_1.metrics.turnover
    assert turnover == result_2.metrics.turnover > 0  # costs never change the positions
    np.testing.assert_array_equal(result_1.positions, result_2.positions)
    delta = math.log(result_2.equity[-1]) - math.log(result_1.equity[-1])
    expected = turnover * (math.log1p(-8e-4) - math.log1p(-4e-4))
    assert delta == pytest.approx(expected, rel=1e-9)
    assert result_2.metrics.total_return < result_1.metrics.total_return


def _fees(fee_bps: float) -> BacktestConfig:
    return BacktestConfig(fee_bps=fee_bps, slippage_bps=0.0)


def test_fee_and_slippage_add_up() -> None:
    close = random_walk(1500, 11)
    signal = random_signal(1500, 12)
    a = simulate(close, signal, config=BacktestConfig(fee_bps=2.0, slippage_bps=3.0))[1]
    b = simulate(close, signal, config=BacktestConfig(fee_bps=5.0, slippage_bps=0.0))[1]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(5))
def test_trade_returns_compound_to_the_final_equity(seed: int) -> None:
    close = random_walk(2500, seed)
    signal = random_signal(2500, seed + 50)
    cfg = BacktestConfig(fee_bps=7.0, slippage_bps=1.0)
    m, equity, pos, _ = simulate(close, signal, config=cfg)
    # recompute trade returns with a plain loop over segments
    k = cfg.cost_rate
    ret = np.concatenate(([0.0], close[1:] / close[:-1] - 1))
    trades = []
    i = 1
    while i < len(pos):
        if pos[i] == 0:
            i += 1
            continue
        j = i
        growth = 1.0 - k
        while j < len(pos) and pos[j] == pos[i]:
            growth *= 1 + pos[j] * ret[j]
            j += 1
        if j < len(pos):
            growth *= 1 - k
        trades.append(growth - 1)
        i = j
    assert m.trades == len(trades)
    assert m.win_rate == pytest.approx(np.mean(np.array(trades) > 0))
    assert math.prod(1 + t for t in trades) == pytest.approx(equity[-1], rel=1e-9)


def test_buy_and_hold_earns_the_price_change_minus_one_entry() -> None:
    close = random_walk(1000, 4)
    cfg = BacktestConfig(fee_bps=10.0, slippage_bps=5.0)
    m, equity, *_ = simulate(close, np.ones(1000, dtype=np.int8), config=cfg)
    assert equity[-1] == pytest.approx(close[-1] / close[0] * (1 - 0.0015), rel=1e-10)
    assert m.trades == 1 and m.turnover == 1.0


def test_short_earns_the_negated_bar_returns() -> None:
    close = random_walk(500, 8)
    _, _, _, net = simulate(close, -np.ones(500, dtype=np.int8), config=FREE)
    ret = close[1:] / close[:-1] - 1
    np.testing.assert_allclose(net[1:], -ret, rtol=1e-12)


def test_long_only_clips_shorts_to_flat() -> None:
    close = random_walk(800, 2)
    signal = random_signal(800, 3)
    cfg = BacktestConfig(fee_bps=0, slippage_bps=0, allow_short=False)
    _, _, pos, _ = simulate(close, signal, config=cfg)
    np.testing.assert_array_equal(pos[1:], np.maximum(signal[:-1], 0))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_constant_price_gives_zero_return_for_every_strategy(name: str) -> None:
    close = np.full(500, 42.5)
    params = {"ma_crossover": {"fast": 3, "slow": 10}, "momentum": {"lookback": 5}}.get(
        name, {"window": 10}
    )
    r = run_backtest(close, name, params, config=BacktestConfig(fee_bps=25, slippage_bps=5))
    assert r.metrics.total_return == 0.0
    assert r.metrics.trades == 0
    assert r.metrics.turnover == 0.0
    assert r.metrics.sharpe == 0.0 and r.metrics.sortino == 0.0
    assert r.metrics.max_drawdown == 0.0
    assert math.isnan(r.metrics.win_rate)
    assert r.metrics.to_dict()["win_rate"] is None
    np.testing.assert_array_equal(r.equity, np.ones(500))


def test_flat_signal_never_trades_or_pays() -> None:
    close = random_walk(300, 1)
    m, equity, *_ = simulate(close, np.zeros(300, dtype=np.int8), config=_fees(50))
    assert m.total_return == 0.0 and m.turnover == 0.0 and m.trades == 0
    np.testing.assert_array_equal(equity, np.ones(300))


def test_a_short_through_a_price_tripling_is_ruined_and_stays_at_zero() -> None:
    close = [10.0, 10.0, 30.0, 5.0, 1.0]
    m, equity, *_ = simulate(close, [-1, -1, -1, -1, -1], config=FREE)
    assert equity.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert m.total_return == -1.0 and m.annualized_return == -1.0
    assert m.max_drawdown == 1.0


# --- no look-ahead --------------------------------------------------------------------------

CASES = [
    ("ma_crossover", {"fast": 5, "slow": 20}),
    ("ma_crossover", {"fast": 1, "slow": 2}),
    ("momentum", {"lookback": 10, "threshold": 0.0}),
    ("momentum", {"lookback": 1, "threshold": 0.002}),
    ("mean_reversion", {"window": 20, "entry_z": 1.5, "exit_z": 0.3}),
    ("mean_reversion", {"window": 2, "entry_z": 0.5, "exit_z": 0.0}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
@settings(max_examples=25, deadline=None)
@given(cut=st.integers(min_value=1, max_value=398), seed=st.integers(0, 2**16))
def test_no_look_ahead(name: str, params: dict, cut: int, seed: int) -> None:
    """Changing prices from bar ``cut`` on cannot change any position up to bar ``cut``
    (positions held during bar t are decided by close t-1), nor returns before ``cut``."""
    close = random_walk(400, seed)
    future = close.copy()
    future[cut:] *= np.exp(np.random.default_rng(seed + 1).normal(0, 0.05, 400 - cut))
    a = run_backtest(close, name, params, config=_fees(3))
    b = run_backtest(future, name, params, config=_fees(3))
    np.testing.assert_array_equal(a.positions[: cut + 1], b.positions[: cut + 1])
    np.testing.assert_array_equal(a.equity[:cut], b.equity[:cut])
    strategy = STRATEGIES[name]
    np.testing.assert_array_equal(
        strategy.signal(close, params)[:cut], strategy.signal(future, params)[:cut]
    )


def test_position_follows_the_signal_one_bar_later() -> None:
    close = random_walk(300, 5)
    r = run_backtest(close, "ma_crossover", {"fast": 3, "slow": 9}, config=FREE)
    sig = STRATEGIES["ma_crossover"].signal(close, {"fast": 3, "slow": 9})
    assert r.positions[0] == 0
    np.testing.assert_array_equal(r.positions[1:], sig[:-1])


# --- against a naive loop ----------------------------------------------------------------


def naive_signal(close: np.ndarray, name: str, p: dict) -> list[int]:
    out = []
    state = 0
    for t in range(len(close)):
        hist = close[: t + 1]
        if name == "ma_crossover":
            if t + 1 < p["slow"]:
                out.append(0)
                continue
            diff = hist[-p["fast"] :].mean() - hist[-p["slow"] :].mean()
            out.append(1 if diff > 0 else -1 if diff < 0 else 0)
        elif name == "momentum":
            if t < p["lookback"]:
                out.append(0)
                continue
            change = hist[-1] / hist[-1 - p["lookback"]] - 1
            out.append(1 if change > p["threshold"] else -1 if change < -p["threshold"] else 0)
        else:
            if t + 1 < p["window"]:
                out.append(0)
                continue
            win = hist[-p["window"] :]
            sd = win.std()
            z = (hist[-1] - win.mean()) / sd if sd > 0 else 0.0
            if abs(z) <= p["exit_z"]:
                state = 0
            elif z <= -p["entry_z"]:
                state = 1
            elif z >= p["entry_z"]:
                state = -1
            out.append(state)
    return out


def naive_equity(close: np.ndarray, signal: list[int], k: float) -> list[float]:
    equity, pos = [1.0], 0
    for t in range(1, len(close)):
        new = signal[t - 1]
        value = equity[-1] * (1 - k) ** abs(new - pos)
        pos = new
        equity.append(value * (1 + pos * (close[t] / close[t - 1] - 1)))
    return equity


@pytest.mark.parametrize(("name", "params"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_a_naive_bar_by_bar_loop(name: str, params: dict, seed: int) -> None:
    close = random_walk(600, seed, vol=0.004)
    full = STRATEGIES[name].validate(params)
    expected_signal = naive_signal(close, name, full)
    r = run_backtest(close, name, params, config=BacktestConfig(fee_bps=4, slippage_bps=1))
    assert STRATEGIES[name].signal(close, params).tolist() == expected_signal
    np.testing.assert_allclose(r.equity, naive_equity(close, expected_signal, 5e-4), rtol=1e-10)


def test_rolling_std_stays_accurate_on_a_long_drifting_series() -> None:
    from efsray.backtest.indicators import rolling_mean_std

    close = random_walk(200_000, 9, vol=0.002, start=1000.0) + 5000.0
    mean, std = rolling_mean_std(close, 50)
    for t in (49, 1000, 99_999, 199_999):
        window = close[t - 49 : t + 1]
        assert mean[t] == pytest.approx(window.mean(), rel=1e-12)
        assert std[t] == pytest.approx(window.std(), rel=1e-4)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("close", "match"),
    [
        ([100.0], "at least 2 bars"),
        ([100.0, float("nan"), 101.0], "bar 1 is nan"),
        ([100.0, -1.0], "finite and > 0"),
        ([100.0, 0.0], "finite and > 0"),
        ([[1.0, 2.0], [3.0, 4.0]], "one-dimensional"),
        ([100.0, float("inf")], "finite"),
    ],
)
def test_bad_prices_are_refused(close: list, match: str) -> None:
    with pytest.raises(InvalidDataError, match=match):
        run_backtest(close, "momentum", {"lookback": 1})


def test_bad_signals_are_refused() -> None:
    with pytest.raises(InvalidDataError, match="-1, 0 or 1"):
        simulate([1.0, 2.0, 3.0], [0, 2, 1])
    with pytest.raises(InvalidDataError, match="one per bar"):
        simulate([1.0, 2.0, 3.0], [0, 1])


@pytest.mark.parametrize(
    ("strategy", "params", "match"),
    [
        ("nope", {}, "unknown strategy 'nope'; choose one of ma_crossover, mean_reversion"),
        ("ma_crossover", {"fast": 5}, "needs parameter 'slow'"),
        ("ma_crossover", {"fast": 50, "slow": 20}, "violate fast < slow"),
        ("ma_crossover", {"fast": 20, "slow": 20}, "violate fast < slow"),
        ("ma_crossover", {"fast": 0, "slow": 20}, r"fast=0 is out of range \[1, 1000000\]"),
        ("ma_crossover", {"fast": 5.5, "slow": 20}, "must be a whole number"),
        ("ma_crossover", {"fast": "5", "slow": 20}, "is not a number"),
        ("ma_crossover", {"fast": True, "slow": 20}, "is not a number"),
        ("ma_crossover", {"fast": 5, "slow": 20, "x": 1}, "no parameter 'x'; its parameters"),
        ("momentum", {"lookback": 10, "threshold": -0.1}, "out of range"),
        ("momentum", {"lookback": 10, "threshold": float("nan")}, "not finite"),
        ("mean_reversion", {"window": 20, "entry_z": 1.0, "exit_z": 1.0}, "exit_z < entry_z"),
        ("mean_reversion", {"window": 1}, r"window=1 is out of range"),
    ],
)
def test_bad_parameters_give_clear_errors(strategy: str, params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        run_backtest([1.0, 2.0, 3.0], strategy, params)


def test_integral_floats_are_accepted_for_int_parameters() -> None:
    values = STRATEGIES["ma_crossover"].validate({"fast": 5.0, "slow": np.int64(20)})
    assert values == {"fast": 5, "slow": 20}
    assert all(type(v) is int for v in values.values())


@pytest.mark.parametrize("bad", [-1.0, 1001.0, float("nan"), float("inf"), True, "5"])
def test_bad_costs_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="basis points"):
        BacktestConfig(fee_bps=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="basis points"):
        BacktestConfig(slippage_bps=bad)  # type: ignore[arg-type]


def test_window_longer_than_the_series_stays_flat() -> None:
    r = run_backtest(random_walk(10, 1), "ma_crossover", {"fast": 5, "slow": 50})
    assert r.metrics.trades == 0 and r.metrics.total_return == 0.0


def test_summary_is_json_safe() -> None:
    import json

    r = run_backtest(random_walk(100, 1), "momentum", {"lookback": 3})
    summary = r.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["params"] == {"lookback": 3, "threshold": 0.0}


values = st.one_of(
    st.integers(-(10**7), 10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)


@given(
    name=st.sampled_from(sorted(STRATEGIES)),
    params=st.dictionaries(
        st.sampled_from(["fast", "slow", "lookback", "threshold", "window", "entry_z", "exit_z"]),
        values,
        max_size=4,
    ),
)
def test_parameter_validator_accepts_or_explains(name: str, params: dict) -> None:
    strategy = STRATEGIES[name]
    try:
        valid = strategy.validate(params)
    except ConfigError as exc:
        assert name in str(exc) or any(k in str(exc) for k in params)
        return
    assert set(valid) == set(strategy.param_names)
    for p in strategy.params:
        assert type(valid[p.name]) is p.kind and p.minimum <= valid[p.name] <= p.maximum
    assert strategy.violated(valid) is None


@given(fee=values, slippage=values)
def test_cost_validator_accepts_or_explains(fee: object, slippage: object) -> None:
    try:
        cfg = BacktestConfig(fee_bps=fee, slippage_bps=slippage)  # type: ignore[arg-type]
    except ConfigError as exc:
        assert "basis points" in str(exc)
        return
    assert 0 <= cfg.cost_rate <= 0.2
