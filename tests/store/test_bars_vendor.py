"""Vendor files as users have them (issue 20): pandas' default CSV, latin-1 headers, uint64
volumes, and timestamp options that must not be ignored in silence."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.errors import InvalidDataError
from efsray.store import Store
from efsray.store.bars import normalize_bars


def _frame(n: int = 5) -> pd.DataFrame:
    idx = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    return pd.DataFrame(
        {"Open": 1.0, "High": 2.0, "Low": 0.5, "Close": 1.5, "Volume": 10}, index=idx
    )


def test_pandas_default_to_csv(cli, tmp_path: Path) -> None:
    """backtesting.py's GOOG.csv shape: the index first, with no name."""
    csv = tmp_path / "GOOG.csv"
    _frame().to_csv(csv)
    assert csv.read_text().startswith(",Open")
    res = cli("data", "ingest", csv, "-s", "GOOG", "-t", "1d", "--json")
    assert res.code == 0, res.err and res.json()["rows_written"] == 5


def test_unnamed_range_index_is_dropped_when_a_column_holds_the_time(tmp_path: Path) -> None:
    frame = _frame().reset_index(names="Date")  # a 0, 1, 2, ... index, unnamed
    csv = tmp_path / "x.csv"
    frame.to_csv(csv)
    table = normalize_bars(pa.csv.read_csv(csv))
    assert table.column_names[:6] == ["timestamp", "open", "high", "low", "close", "volume"]
    assert table.num_columns == 6


def test_map_can_name_the_empty_column(cli, tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    frame = _frame()
    frame.index.name = None
    frame.rename(columns={"Open": "o"}).to_csv(csv)
    res = cli(
        "data", "ingest", csv, "-s", "X", "-t", "1d", "--map", "=timestamp", "--map", "o=open"
    )
    assert res.code == 0, res.err


def test_latin1_header(cli, tmp_path: Path) -> None:
    csv = tmp_path / "latin1.csv"
    frame = _frame().rename(columns={"Volume": "Volumé"})
    frame.index.name = "Date"
    frame.to_csv(csv, encoding="latin-1")
    res = cli("data", "ingest", csv, "-s", "X", "-t", "1d")
    assert res.code == 2 and "not UTF-8" in res.err and "--encoding" in res.err
    res = cli(
        "data",
        "ingest",
        csv,
        "-s",
        "X",
        "-t",
        "1d",
        "--encoding",
        "latin-1",
        "--map",
        "volumé=volume",
    )
    assert res.code == 0, res.err
    res = cli("data", "ingest", csv, "-s", "X", "-t", "1d", "--encoding", "klingon")
    assert res.code == 2 and "klingon" in res.err


def test_parquet_uint64_volume_above_2_53(cli, tmp_path: Path) -> None:
    idx = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    big = 2**53 + 1
    table = pa.table(
        {
            "timestamp": pa.array(idx),
            "open": [1.0] * 3,
            "high": [2.0] * 3,
            "low": [0.5] * 3,
            "close": [1.5] * 3,
            "volume": pa.array([big, 2**64 - 1, 0], pa.uint64()),
        }
    )
    path = tmp_path / "u64.parquet"
    pq.write_table(table, path)
    res = cli("data", "ingest", path, "-s", "X", "-t", "1d", "--root", tmp_path / "s")
    assert res.code == 0, res.err
    volumes = Store(tmp_path / "s").market.read("X", "1d").column("volume").to_pylist()
    assert volumes == [float(big), float(2**64 - 1), 0.0]


def test_timestamp_unit_is_validated_even_for_iso_strings(cli, tmp_path: Path) -> None:
    csv = tmp_path / "iso.csv"
    frame = _frame()
    frame.index.name = "Date"
    frame.to_csv(csv)
    res = cli("data", "ingest", csv, "-s", "X", "-t", "1d", "--timestamp-unit", "fortnights")
    assert res.code == 2 and "fortnights" in res.err
    res = cli("data", "ingest", csv, "-s", "X", "-t", "1d", "--timestamp-format", "%Q%Q")
    assert res.code == 2 and "%Q" in res.err
    # a real format is used, not bypassed by pyarrow's ISO inference
    res = cli("data", "ingest", csv, "-s", "X", "-t", "1d", "--timestamp-format", "%d/%m/%Y")
    assert res.code == 2 and "%d/%m/%Y" in res.err


@settings(deadline=None)  # a loaded CI machine: no per-example deadline
@given(st.text(max_size=12))
def test_timestamp_format_check_never_crashes(fmt: str) -> None:
    bars = {
        "timestamp": ["2024-01-01"],
        "open": [1.0],
        "high": [1.0],
        "low": [1.0],
        "close": [1.0],
        "volume": [1.0],
    }
    with contextlib.suppress(InvalidDataError):
        normalize_bars(bars, timestamp_format=fmt)
