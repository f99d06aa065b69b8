"""Bar validation: every malformed input gives a clear error and writes nothing."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.errors import InvalidDataError
from efsray.store import Store
from efsray.store.bars import TIMESTAMP_TYPE, normalize_bars


def good(n: int = 3) -> dict:
    return {
        "timestamp": pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC"),
        "open": [10.0] * n,
        "high": [11.0] * n,
        "low": [9.0] * n,
        "close": [10.5] * n,
        "volume": [100.0] * n,
    }


def mutate(**changes) -> pd.DataFrame:
    frame = pd.DataFrame(good())
    for key, value in changes.items():
        if value is _DROP:
            frame = frame.drop(columns=[key])
        else:
            frame[key] = value
    return frame


_DROP = object()
_T = pd.Timestamp("2024-01-01", tz="UTC")

MALFORMED = {
    "no rows": pd.DataFrame(good()).iloc[:0],
    "missing open": mutate(open=_DROP),
    "missing volume": mutate(volume=_DROP),
    "missing timestamp": mutate(timestamp=_DROP),
    "nan open": mutate(open=[10.0, math.nan, 10.0]),
    "nan close": mutate(close=[math.nan, 10.0, 10.0]),
    "inf high": mutate(high=[math.inf, 11.0, 11.0]),
    "-inf low": mutate(low=[-math.inf, 9.0, 9.0]),
    "null high": pa.table({**good(), "high": pa.array([11.0, None, 11.0])}),
    "high below open": mutate(high=[9.5, 11.0, 11.0]),
    "high below close": mutate(high=[10.2, 11.0, 11.0]),
    "low above open": mutate(low=[10.2, 9.0, 9.0]),
    "low above close": mutate(low=[9.0, 10.6, 9.0]),
    "high below low": mutate(high=[8.0, 11.0, 11.0]),
    "negative volume": mutate(volume=[-1.0, 100.0, 100.0]),
    "nan volume": mutate(volume=[math.nan, 100.0, 100.0]),
    "string prices": mutate(open=["10", "10", "10"]),
    "bool prices": mutate(close=[True, True, True]),
    "duplicate timestamps": mutate(timestamp=[_T, _T, _T + pd.Timedelta(minutes=1)]),
    "null timestamp": pa.table({**good(), "timestamp": pa.array([None, 1, 2], pa.timestamp("s"))}),
    "unparseable timestamp": mutate(timestamp=["2024-01-01", "yesterday", "2024-01-03"]),
    "float timestamps": mutate(timestamp=[1.5, 2.5, 3.5]),
    "mixed epoch units": mutate(timestamp=[1_700_000_000, 1_700_000_000_000, 1_700_000_000_001]),
    "ancient epoch": mutate(timestamp=[1, 2, 3]),
    "string extra column": mutate(exchange=["X", "Y", "Z"]),
    "bad extra column name": mutate(**{"bad name!": [1.0, 2.0, 3.0]}),
    "two timestamp columns": mutate(date=["2024-01-01", "2024-01-02", "2024-01-03"]),
    "case-duplicate columns": pd.DataFrame({**good(), "OPEN": [1.0, 1.0, 1.0]}),
    "not a table": 42,
    "string": "open,high,low,close",
    "list of non-dicts": [[1, 2, 3]],
    "ragged dict": {"timestamp": [1, 2], "open": [1.0]},
    "decimal timestamp": pa.table({**good(), "timestamp": pa.array([1, 2, 3], pa.decimal128(5))}),
    "empty list": [],
}


@pytest.mark.parametrize("bad", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_input_is_refused_and_nothing_written(tmp_path: Path, bad) -> None:
    store = Store(tmp_path / "s")
    with pytest.raises(InvalidDataError) as info:
        store.market.append("AAPL", "1m", bad)
    message = str(info.value)
    assert len(message) > 20 and "\n" not in message.strip()
    assert store.market.list_series() == []
    assert not (tmp_path / "s/market_data/ohlcv/AAPL").exists() or not any(
        (tmp_path / "s/market_data/ohlcv/AAPL").rglob("*.json")
    )


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"timestamp_unit": "weeks"}, "timestamp_unit"),
        ({"naive_tz": "Mars/Olympus"}, "Mars/Olympus"),
        ({"column_map": {"open": "close"}}, "both mean"),
        ({"timestamp_format": "%d/%m/%Y"}, "cannot parse"),
    ],
)
def test_bad_options_are_refused(tmp_path: Path, options: dict, needle: str) -> None:
    frame = mutate(timestamp=["2024-01-01", "2024-01-02", "2024-01-03"])
    if "timestamp_unit" in options:
        frame = mutate(timestamp=[1_700_000_000, 1_700_000_001, 1_700_000_002])
    with pytest.raises(InvalidDataError, match=needle):
        Store(tmp_path / "s").market.append("AAPL", "1m", frame, **options)


def test_error_names_the_row_and_values() -> None:
    with pytest.raises(InvalidDataError, match=r"row 0 .*high=9\.5"):
        normalize_bars(mutate(high=[9.5, 11.0, 11.0]))


@pytest.mark.parametrize(
    "data",
    [
        pd.DataFrame(good()),
        pd.DataFrame(good()).set_index("timestamp"),
        pl.DataFrame({k: list(v) for k, v in good().items()}),
        pa.table(good()),
        pd.DataFrame(good()).to_dict("records"),
        {k: list(v) for k, v in good().items()},
    ],
    ids=["pandas", "pandas-index", "polars", "arrow", "records", "columns"],
)
def test_every_input_shape_normalizes_the_same(data) -> None:
    out = normalize_bars(data)
    assert out.schema.field("timestamp").type == TIMESTAMP_TYPE
    assert out.column_names == ["timestamp", "open", "high", "low", "close", "volume"]
    assert out.column("timestamp")[0].as_py() == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def test_single_bar_dict() -> None:
    out = normalize_bars(
        {
            "timestamp": "2024-01-01T00:00:00Z",
            "open": 1,
            "high": 2,
            "low": 0.5,
            "close": 1.5,
            "volume": 3,
        }
    )
    assert out.num_rows == 1


def test_timezones_and_epochs() -> None:
    ny = pd.DataFrame({**good(1), "timestamp": pd.to_datetime(["2024-07-01 09:30"])})
    out = normalize_bars(ny, naive_tz="America/New_York")
    assert out.column("timestamp")[0].as_py() == dt.datetime(2024, 7, 1, 13, 30, tzinfo=dt.UTC)
    aware = pd.DataFrame({**good(1), "timestamp": [pd.Timestamp("2024-07-01 09:30+02:00")]})
    assert normalize_bars(aware).column("timestamp")[0].as_py().hour == 7
    for value, unit in ((1_700_000_000, None), (1_700_000_000_000, None), (1_700_000_000, "s")):
        frame = pd.DataFrame({**good(1), "timestamp": [value]})
        got = normalize_bars(frame, timestamp_unit=unit).column("timestamp")[0].as_py()
        assert got == dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC)
    strings = pd.DataFrame({**good(1), "timestamp": ["2024-01-01T00:00:00-05:00"]})
    assert normalize_bars(strings).column("timestamp")[0].as_py().hour == 5


def test_vendor_columns_and_extras() -> None:
    frame = pd.DataFrame(
        {
            "Date": ["2024-01-02", "2024-01-01"],
            "Open": [1.0, 1.0],
            "High": [2.0, 2.0],
            "Low": [0.5, 0.5],
            "Close": [1.5, 1.5],
            "Vol": [1, 2],
            "VWAP": [1.2, None],
        }
    )
    out = normalize_bars(frame)
    assert out.column_names == ["timestamp", "open", "high", "low", "close", "volume", "vwap"]
    assert out.column("volume").to_pylist() == [2.0, 1.0]  # sorted by time
    assert out.column("vwap").to_pylist() == [None, 1.2]
    mapped = normalize_bars(
        frame.rename(columns={"Date": "When"}), column_map={"When": "timestamp"}
    )
    assert mapped.num_rows == 2


# --- property test of the validator -----------------------------------------------------

finite = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)
anything = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.none(), st.just(-1.0), finite
)


@st.composite
def bar_rows(draw):
    n = draw(st.integers(min_value=0, max_value=12))
    rows = []
    for _ in range(n):
        corrupt = draw(st.booleans()) and draw(st.booleans())
        price = st.one_of(anything, finite) if corrupt else finite
        o, c = draw(price), draw(price)
        h = draw(price) if corrupt else max(o, c) + draw(st.floats(0, 10))
        lo = draw(price) if corrupt else min(o, c) - draw(st.floats(0, min(o, c) / 2))
        v = draw(anything if corrupt else finite)
        minute = draw(st.integers(0, 20))
        rows.append(
            {
                "timestamp": _T + pd.Timedelta(minutes=minute),
                "open": o,
                "high": h,
                "low": lo,
                "close": c,
                "volume": v,
            }
        )
    return rows


def _valid(row: dict) -> bool:
    vals = [row[k] for k in ("open", "high", "low", "close", "volume")]
    if any(v is None or not math.isfinite(v) for v in vals):
        return False
    o, h, lo, c, v = vals
    return h >= max(o, c) and lo <= min(o, c) and v >= 0


@settings(max_examples=300, deadline=None)
@given(bar_rows())
def test_validator_accepts_exactly_the_valid_batches(rows: list[dict]) -> None:
    stamps = [r["timestamp"] for r in rows]
    expect_ok = bool(rows) and all(map(_valid, rows)) and len(set(stamps)) == len(stamps)
    try:
        out = normalize_bars(rows)
    except InvalidDataError:
        assert not expect_ok
        return
    assert expect_ok
    ts = out.column("timestamp").cast(pa.int64()).to_numpy()
    assert np.all(np.diff(ts) > 0)
    assert out.num_rows == len(rows)
    hi = out.column("high").to_numpy()
    assert np.all(hi >= np.maximum(out.column("open").to_numpy(), out.column("close").to_numpy()))


@st.composite
def pandas_frames(draw):
    """DataFrames as vendors hand them over: any zone and unit, NaN and NaT, ints, an extra
    column, rows out of order, views into a bigger frame."""
    n = draw(st.integers(min_value=1, max_value=8))
    zone = draw(st.sampled_from(["UTC", "America/New_York", "Asia/Kolkata", None]))
    unit = draw(st.sampled_from(["ns", "us", "ms", "s"]))
    minutes = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    stamps = pd.DatetimeIndex(
        [pd.Timestamp("2020-03-08", tz=zone) + pd.Timedelta(minutes=m) for m in minutes]
    ).as_unit(unit)
    if draw(st.booleans()):
        stamps = stamps.insert(draw(st.integers(0, n - 1)), pd.NaT)[:n]
    value = st.one_of(finite, st.just(float("nan")), st.just(-1.0))
    frame = pd.DataFrame(
        {
            "timestamp": stamps,
            "open": draw(st.lists(value, min_size=n, max_size=n)),
            "high": [1e7] * n,
            "low": [0.0] * n,
            "close": draw(st.lists(finite, min_size=n, max_size=n)),
            "volume": draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n)),
            "vwap": draw(st.lists(value, min_size=n, max_size=n)),
        }
    )
    if draw(st.booleans()):  # a view into a bigger frame, as frame.iloc[a:b] gives
        frame = pd.concat([frame, frame.iloc[:1]], ignore_index=True).iloc[:n]
    return frame


def _outcome(data) -> pa.Table | str:
    try:
        return normalize_bars(data)
    except InvalidDataError as exc:
        return type(exc).__name__


@settings(max_examples=300, deadline=None)
@given(pandas_frames())
def test_pandas_fast_path_equals_arrows_own_conversion(frame: pd.DataFrame) -> None:
    """Bars from a DataFrame, converted column by column, normalize exactly as the same
    frame converted by ``Table.from_pandas`` (NaN as null, every zone's instants, units)."""
    ours = _outcome(frame)
    reference = _outcome(pa.Table.from_pandas(frame, preserve_index=False))
    if isinstance(ours, str) or isinstance(reference, str):
        assert ours == reference
    else:
        assert ours.equals(reference), (ours, reference)


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", None])
def test_pandas_without_its_column_accessor_normalizes_the_same(
    monkeypatch: pytest.MonkeyPatch, zone: str | None
) -> None:
    """The fast path reads columns with pandas' ``_get_column_array``; a pandas without it
    takes the public route, with the same result."""
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-02", periods=4, freq="min", tz=zone),
            "open": [1.0, 2.0, 3.0, 4.0],
            "high": [2.0, 3.0, 4.0, 5.0],
            "low": [0.5, 1.0, 2.0, 3.0],
            "close": [1.5, 2.5, 3.5, 4.5],
            "volume": [1, 2, 3, 4],
            "vwap": [float("nan"), 2.0, 3.0, 4.0],
        }
    ).iloc[1:]
    expected = normalize_bars(frame)
    assert expected.column("vwap").null_count == 0  # the NaN row was cut off by iloc
    monkeypatch.delattr(pd.DataFrame, "_get_column_array")
    assert normalize_bars(frame).equals(expected)
    assert normalize_bars(frame.iloc[::-1]).equals(expected)
