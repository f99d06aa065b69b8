"""The parameter-grid parser, grid expansion with constraints, and timeframes."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from efsray.backtest import (
    CALENDAR_US_EQUITY,
    STRATEGIES,
    Calendar,
    ParamGrid,
    Timeframe,
    format_grid,
    parse_grid,
    parse_timeframe,
)
from efsray.backtest.grid import MAX_AXIS_VALUES
from efsray.errors import ConfigError

# --- parse_grid ---------------------------------------------------------------------------


def test_the_documented_example() -> None:
    grid = parse_grid("fast=5:50:5,slow=20:200:20")
    assert grid.as_dict() == {
        "fast": [5, 10, 15, 20, 25, 30, 35, 40, 45, 50],
        "slow": [20, 40, 60, 80, 100, 120, 140, 160, 180, 200],
    }
    assert grid.size == 100
    points = list(grid.points())
    assert points[0] == {"fast": 5, "slow": 20}
    assert points[1] == {"fast": 5, "slow": 40}  # the last axis varies fastest
    assert len({tuple(p.items()) for p in points}) == 100


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("a=1|2|3", {"a": [1, 2, 3]}),
        ("a=3|1|2", {"a": [3, 1, 2]}),
        ("a=7", {"a": [7]}),
        (" a = 1 : 3 , b = 0.5 ", {"a": [1, 2, 3], "b": [0.5]}),
        ("a=1:10:4", {"a": [1, 5, 9]}),
        ("a=0.1:0.3:0.1", {"a": [0.1, 0.2, 0.3]}),
        ("a=1:2:0.25", {"a": [1.0, 1.25, 1.5, 1.75, 2.0]}),
        ("a=-2:2:2", {"a": [-2, 0, 2]}),
        ("a=1e-3|2e-3", {"a": [0.001, 0.002]}),
        ("a=5:5:1", {"a": [5]}),
        ("entry_z=1.5|2|2.5,exit_z=0", {"entry_z": [1.5, 2.0, 2.5], "exit_z": [0]}),
    ],
)
def test_valid_specs(spec: str, expected: dict) -> None:
    grid = parse_grid(spec)
    assert grid.as_dict() == expected
    for name, values in expected.items():
        kinds = {type(v) for v in dict(grid.axes)[name]}
        assert kinds == {type(values[0])}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("", "grid spec is empty"),
        ("   ", "grid spec is empty"),
        ("fast", "has no '='"),
        ("fast=", "no values after '='"),
        ("=5", "is not a parameter name"),
        ("1fast=5", "is not a parameter name"),
        ("fa-st=5", "is not a parameter name"),
        ("fast=5,,slow=3", "empty item"),
        ("fast=5,", "empty item"),
        ("fast=5,fast=6", "names 'fast' twice"),
        ("fast=a:b", "'a' is not a number"),
        ("fast=5:50:0", "step must be > 0"),
        ("fast=5:50:-5", "step must be > 0"),
        ("fast=50:5:5", "stop 5 is below the start 50"),
        ("fast=1:2:3:4", "a range is START:STOP or START:STOP:STEP"),
        ("fast=1:", "empty number"),
        ("fast=1|2:3", "mixes a range"),
        ("fast=1||2", "empty number"),
        ("fast=1|1", "lists 1 more than once"),
        ("fast=nan", "is not a number"),
        ("fast=inf", "is not a number"),
        ("fast=1e999", "out of range"),
        ("fast=1e9999", "is not a number"),
        ("fast=1e16", "out of range"),
        ("fast=0:1:0.00001", f"more than {MAX_AXIS_VALUES}"),
        ("fast=0:1:1e-300", f"more than {MAX_AXIS_VALUES}"),
        ("a=1:1000,b=1:1000,c=1:2", "more than 1,000,000"),
        ("fast=0x10", "is not a number"),
    ],
)
def test_invalid_specs_give_clear_errors(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_grid(spec)


@given(st.text(max_size=60))
def test_any_text_parses_or_raises_config_error(spec: str) -> None:
    try:
        grid = parse_grid(spec)
    except ConfigError as exc:
        assert str(exc)
        return
    assert grid.size >= 1
    assert all(values for _, values in grid.axes)


GRAMMAR_TEXT = st.lists(
    st.sampled_from(list("ab_=:|,.-+e 0123456789")), min_size=1, max_size=30
).map("".join)


@given(GRAMMAR_TEXT)
def test_near_miss_text_parses_or_raises_config_error(spec: str) -> None:
    try:
        grid = parse_grid(spec)
    except ConfigError as exc:
        assert "grid" in str(exc)
        return
    assert len(list(grid.points())) == grid.size
    assert parse_grid(format_grid(grid)) == grid


names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
int_axes = st.lists(st.integers(-(10**6), 10**6), min_size=1, max_size=6, unique=True)
float_axes = st.lists(
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=6
).map(lambda xs: list(dict.fromkeys(x + 0.0 for x in xs)))


@given(st.dictionaries(names, st.one_of(int_axes, float_axes), min_size=1, max_size=4))
def test_format_then_parse_round_trips(axes: dict) -> None:
    grid = ParamGrid.from_mapping(axes)
    assert parse_grid(format_grid(grid)) == grid


@given(
    start=st.integers(-1000, 1000),
    span=st.integers(0, 2000),
    step=st.integers(1, 300),
)
def test_integer_ranges_are_inclusive_python_ranges(start: int, span: int, step: int) -> None:
    stop = start + span
    grid = parse_grid(f"x={start}:{stop}:{step}")
    assert list(dict(grid.axes)["x"]) == list(range(start, stop + 1, step))


@given(
    start=st.decimals(-100, 100, places=3, allow_nan=False, allow_infinity=False),
    span=st.decimals(0, 50, places=3, allow_nan=False, allow_infinity=False),
    step=st.decimals(Decimal("0.01"), 10, places=2, allow_nan=False, allow_infinity=False),
)
def test_decimal_ranges_are_exact(start: Decimal, span: Decimal, step: Decimal) -> None:
    stop = start + span
    values = dict(parse_grid(f"x={start}:{stop}:{step}").axes)["x"]
    expected = []
    v = start
    while v <= stop:
        expected.append(v)
        v += step
    if all(d == d.to_integral_value() and "." not in str(d) for d in (start, stop, step)):
        assert list(values) == [int(d) for d in expected]
    else:
        assert list(values) == [float(d) for d in expected]
    assert values[0] == float(start)
    assert values[-1] <= float(stop) and float(Decimal(str(values[-1])) + step) > float(stop)


def test_from_mapping_validates() -> None:
    assert ParamGrid.from_mapping({"a": [1, 2], "b": 3}).as_dict() == {"a": [1, 2], "b": [3]}
    with pytest.raises(ConfigError, match="no values"):
        ParamGrid.from_mapping({"a": []})
    with pytest.raises(ConfigError, match="must be numbers"):
        ParamGrid.from_mapping({"a": ["x"]})
    with pytest.raises(ConfigError, match="not a parameter name"):
        ParamGrid.from_mapping({"a b": [1]})


# --- expansion against a strategy ---------------------------------------------------------


def test_constraint_filters_points_and_reports_them() -> None:
    plan = STRATEGIES["ma_crossover"].expand(parse_grid("fast=10:30:10,slow=20:40:10"))
    assert [dict(p) for p in plan.points] == [
        {"fast": 10, "slow": 20},
        {"fast": 10, "slow": 30},
        {"fast": 10, "slow": 40},
        {"fast": 20, "slow": 30},
        {"fast": 20, "slow": 40},
        {"fast": 30, "slow": 40},
    ]
    assert [dict(r.params) for r in plan.rejected] == [
        {"fast": 20, "slow": 20},
        {"fast": 30, "slow": 20},
        {"fast": 30, "slow": 30},
    ]
    assert {r.reason for r in plan.rejected} == {"fast < slow"}
    assert plan.summary() == "6 parameter sets (3 skipped: 3 violate fast < slow)"


def test_expansion_fills_defaults() -> None:
    plan = STRATEGIES["mean_reversion"].expand(parse_grid("window=10|20"))
    assert [dict(p) for p in plan.points] == [
        {"window": 10, "entry_z": 2.0, "exit_z": 0.5},
        {"window": 20, "entry_z": 2.0, "exit_z": 0.5},
    ]
    assert plan.summary() == "2 parameter sets"


@pytest.mark.parametrize(
    ("strategy", "spec", "match"),
    [
        ("ma_crossover", "fast=5:10,slwo=20", "no parameter 'slwo'; its parameters are fast"),
        ("ma_crossover", "fast=0:10,slow=20", r"fast=0 is out of range"),
        ("ma_crossover", "fast=5.5,slow=20", "whole number"),
        ("ma_crossover", "fast=50|60,slow=20|30", "every one of the 4 grid points"),
        ("ma_crossover", "fast=5", "needs parameter 'slow'"),
        ("momentum", "lookback=5,threshold=-1", "out of range"),
    ],
)
def test_bad_grids_for_a_strategy(strategy: str, spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        STRATEGIES[strategy].expand(parse_grid(spec))


@given(
    fast=st.lists(st.integers(1, 100), min_size=1, max_size=8, unique=True),
    slow=st.lists(st.integers(2, 200), min_size=1, max_size=8, unique=True),
)
def test_expansion_partitions_the_grid(fast: list[int], slow: list[int]) -> None:
    assume(any(f < s for f in fast for s in slow))
    grid = ParamGrid.from_mapping({"fast": fast, "slow": slow})
    plan = STRATEGIES["ma_crossover"].expand(grid)
    assert len(plan.points) + len(plan.rejected) == grid.size
    assert all(p["fast"] < p["slow"] for p in plan.points)
    assert all(r.params["fast"] >= r.params["slow"] for r in plan.rejected)


# --- timeframes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "per_year"),
    [
        ("1m", 60, 525_600),
        ("5m", 300, 105_120),
        ("15m", 900, 35_040),
        ("1h", 3600, 8760),
        ("4h", 14_400, 2190),
        ("1d", 86_400, 365),
        ("1w", 604_800, 365 / 7),
        ("30s", 30, 1_051_200),
    ],
)
def test_timeframes(text: str, seconds: int, per_year: float) -> None:
    tf = parse_timeframe(text)
    assert tf.seconds == seconds
    assert tf.name == text
    assert tf.periods_per_year() == pytest.approx(per_year)


def test_equity_calendar() -> None:
    assert parse_timeframe("1d").periods_per_year(CALENDAR_US_EQUITY) == 252
    assert parse_timeframe("1h").periods_per_year(CALENDAR_US_EQUITY) == pytest.approx(1638)
    assert parse_timeframe("1m").periods_per_year(CALENDAR_US_EQUITY) == pytest.approx(98_280)
    with pytest.raises(ConfigError, match="days_per_year"):
        Calendar(days_per_year=0)
    with pytest.raises(ConfigError, match="hours_per_day"):
        Calendar(hours_per_day=25)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "invalid timeframe"),
        ("m", "invalid timeframe"),
        ("0m", "invalid timeframe"),
        ("01m", "invalid timeframe"),
        ("-1m", "invalid timeframe"),
        ("1.5h", "invalid timeframe"),
        ("1M", "units are lowercase"),
        ("1H", "units are lowercase"),
        ("1min", "unknown unit 'min'"),
        ("5x", "unknown unit 'x'"),
        ("400d", "longer than a year"),
        ("1 h", "invalid timeframe"),
    ],
)
def test_invalid_timeframes(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_timeframe(text)


@given(st.text(max_size=12))
def test_any_timeframe_text_parses_or_raises_config_error(text: str) -> None:
    try:
        tf = parse_timeframe(text)
    except ConfigError:
        return
    assert isinstance(tf, Timeframe)
    assert parse_timeframe(tf.name) == tf
    assert tf.seconds > 0 and math.isfinite(tf.periods_per_year())


@given(st.integers(1, 9999), st.sampled_from("smhdw"))
def test_timeframe_round_trip(count: int, unit: str) -> None:
    text = f"{count}{unit}"
    try:
        tf = parse_timeframe(text)
    except ConfigError as exc:
        assert "longer than a year" in str(exc)
        return
    assert str(tf) == text and tf.count == count and tf.unit == unit
