"""Market data through the public API: round trips, ranges, tails, versions, merging,
compaction, back-fills, validation errors and names.

polars and DuckDB (test extras) are imported by the cases that use them, so the module
imports where only efsray's runtime dependencies are installed (the QEMU guests)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from efsray.errors import (
    InvalidDataError,
    InvalidNameError,
    NotFoundError,
    StoreFormatError,
    VersionNotFoundError,
)
from efsray.store import Store
from tests.conformance.site import Site, case
from tests.store._bars import EPOCH_NS, MINUTE_NS, batch, batch_ids


def ts(minute: int) -> pd.Timestamp:
    return pd.Timestamp(EPOCH_NS + minute * MINUTE_NS, tz="UTC")


@case("market")
def append_and_read_round_trip(site: Site) -> None:
    store = site.store()
    info = store.market.append("AAPL", "1m", batch(0))
    assert (info.version, info.rows, info.rows_written, info.rows_replaced) == (1, 100, 100, 0)
    got = store.market.read("AAPL", "1m")
    assert got.equals(batch(0))
    assert store.market.list_series() == [("AAPL", "1m")]
    assert site.store().market.read("AAPL", "1m").equals(batch(0))  # a fresh reader too


@case("market")
def outputs(site: Site) -> None:
    import polars as pl

    store = site.store()
    store.market.append("AAPL", "1m", batch(0))
    frame = store.market.read("AAPL", "1m", output="pandas")
    assert isinstance(frame, pd.DataFrame) and len(frame) == 100
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert isinstance(store.market.read("AAPL", "1m", output="polars"), pl.DataFrame)
    with pytest.raises(InvalidDataError, match="output"):
        store.market.read("AAPL", "1m", output="csv")  # type: ignore[arg-type]


@case("market")
def range_and_columns(site: Site) -> None:
    store = site.store()
    for i in range(5):
        store.market.append("AAPL", "1m", batch(i))
    got = store.market.read("AAPL", "1m", start=ts(150), end=ts(249), columns=["close"])
    assert got.column_names == ["timestamp", "close"]
    assert got.num_rows == 100
    assert got.column("timestamp")[0].as_py() == ts(150).to_pydatetime()
    assert set(got.column("close").to_pylist()) == {1001.0, 1002.0}
    # start/end as strings, naive datetimes and nanoseconds mean the same instants
    same = store.market.read("AAPL", "1m", start=str(ts(150)), end=EPOCH_NS + 249 * MINUTE_NS)
    assert same.num_rows == 100
    assert store.market.read("AAPL", "1m", start=ts(10_000)).num_rows == 0
    with pytest.raises(InvalidDataError, match="after end"):
        store.market.read("AAPL", "1m", start=ts(5), end=ts(1))
    with pytest.raises(InvalidDataError, match="unknown column"):
        store.market.read("AAPL", "1m", columns=["vwap"])
    with pytest.raises(InvalidDataError, match="not a time"):
        store.market.read("AAPL", "1m", start="next tuesday")


@case("market")
def tail(site: Site) -> None:
    store = site.store()
    for i in range(30):
        store.market.append("AAPL", "1m", batch(i))
    tail = store.market.tail("AAPL", "1m", 250)
    assert tail.num_rows == 250
    assert tail.column("timestamp")[-1].as_py() == ts(2999).to_pydatetime()
    assert np.all(np.diff(tail.column("timestamp").cast(pa.int64()).to_numpy()) > 0)
    assert store.market.tail("AAPL", "1m", 10_000).num_rows == 3000
    assert store.market.tail("AAPL", "1m", 0).num_rows == 0
    with pytest.raises(InvalidDataError, match="non-negative"):
        store.market.tail("AAPL", "1m", -1)


@case("market", needs=("heavy",))
def tail_equals_the_end_of_a_full_read(site: Site) -> None:
    """Heavy: 80 merging appends (14 s under EFS latency, where the `tail` case runs)."""
    for fmt, symbol in (("arrow", "AAPL"), ("parquet", "MSFT")):
        # merge often: merged segments are written from many-chunk tables
        store = site.store(merge_factor=3, segment_format=fmt)
        for i in range(40):
            store.market.append(symbol, "1m", batch(i, n=37, start_minute=37 * i))
        whole = store.market.read(symbol, "1m")
        for n in (1, 36, 37, 38, 100, 500, 1479, 1480, 5000):
            assert store.market.tail(symbol, "1m", n).equals(whole.slice(max(0, 1480 - n))), n


@case("market", needs=("heavy",))
def pandas_and_polars_reads_equal_the_arrow_read(site: Site) -> None:
    """Big whole-segment reads to pandas/polars take another path (one buffer per column,
    filled by the reader threads): it must give exactly the Arrow read's data, with an extra
    column that older segments lack and that has nulls of its own."""
    import polars as pl

    for fmt, symbol in (("arrow", "AAPL"), ("parquet", "MSFT")):
        store = site.store(segment_format=fmt, merge_factor=2)
        rows = 150_000  # 3 batches of 7.2 MB: over the threshold for parallel reads
        for i in range(3):
            bars = batch(i, n=rows)
            if i > 0:
                vwap = np.arange(rows, dtype=float)
                bars = bars.append_column("vwap", pa.array(vwap, mask=vwap % 7 == 0))
            store.market.append(symbol, "1m", bars)
        info = store.market.info(symbol, "1m")
        assert info.segments > 1 and info.rows == 3 * rows
        for columns in (None, ["close", "vwap"], ["volume"]):
            whole = store.market.read(symbol, "1m", columns=columns)
            frame = store.market.read(symbol, "1m", columns=columns, output="pandas")
            pd.testing.assert_frame_equal(frame, whole.to_pandas())
            assert store.market.read(symbol, "1m", columns=columns, output="polars").equals(
                pl.from_arrow(whole)
            )
            part = store.market.read(symbol, "1m", start=ts(100), end=ts(3 * rows - 100),
                                     columns=columns, output="pandas")  # fmt: skip
            pd.testing.assert_frame_equal(
                part, whole.to_pandas().iloc[100 : 3 * rows - 99].reset_index(drop=True)
            )


@case("market")
def newest_write_wins_on_equal_timestamps(site: Site) -> None:
    store = site.store()
    store.market.append("AAPL", "1m", batch(0))
    store.market.append("AAPL", "1m", batch(1))
    info = store.market.append("AAPL", "1m", batch(7, n=50, start_minute=75))  # straddles 0|1
    assert (info.rows, info.rows_written, info.rows_replaced) == (200, 50, 50)
    got = store.market.read("AAPL", "1m")
    ids = batch_ids(got)
    assert list(ids[:75]) == [0] * 75 and list(ids[75:125]) == [7] * 50
    assert list(ids[125:]) == [1] * 75
    # re-ingesting the same data is idempotent in content
    store.market.append("AAPL", "1m", batch(7, n=50, start_minute=75))
    assert store.market.read("AAPL", "1m").equals(got)


@case("market")
def backfill_before_history_and_in_gaps(site: Site) -> None:
    store = site.store()
    store.market.append("AAPL", "1m", batch(5))
    store.market.append("AAPL", "1m", batch(2))
    store.market.append("AAPL", "1m", batch(9))
    ids = batch_ids(store.market.read("AAPL", "1m"))
    assert list(dict.fromkeys(ids)) == [2, 5, 9]


@case("market")
def versions_history_and_as_of(site: Site) -> None:
    store = site.store()
    for i in range(4):
        store.market.append("AAPL", "1m", batch(i))
    store.market.write("AAPL", "1m", batch(9))
    history = store.market.history("AAPL", "1m")
    assert [h.version for h in history] == [5, 4, 3, 2, 1]
    assert [h.operation for h in history][:2] == ["write", "append"]
    assert history[0].rows == 100 and history[1].rows == 400
    assert store.market.read("AAPL", "1m", version=2).num_rows == 200
    assert store.market.tail("AAPL", "1m", 5, version=3).column("close")[0].as_py() == 1002.0
    assert batch_ids(store.market.read("AAPL", "1m")).tolist() == [9] * 100
    with pytest.raises(VersionNotFoundError, match="no version 6"):
        store.market.read("AAPL", "1m", version=6)
    with pytest.raises(InvalidDataError, match="positive integer"):
        store.market.read("AAPL", "1m", version=0)


@case("market")
def missing_series(site: Site) -> None:
    store = site.store()
    with pytest.raises(NotFoundError, match="no market data for MSFT/1m"):
        store.market.read("MSFT", "1m")
    with pytest.raises(NotFoundError):
        store.market.tail("MSFT", "1m", 5, version=1)


@case("market")
def extra_columns_are_unioned(site: Site) -> None:
    store = site.store()
    store.market.append("AAPL", "1m", batch(0))
    second = batch(1).append_column("vwap", pa.array(np.full(100, 3.0)))
    store.market.append("AAPL", "1m", second)
    got = store.market.read("AAPL", "1m")
    assert got.column_names[-1] == "vwap"
    assert got.column("vwap").null_count == 100
    assert store.market.tail("AAPL", "1m", 1, columns=["vwap"]).column("vwap")[0].as_py() == 3.0


@case("market", needs=("heavy",))
def auto_merge_bounds_segments(site: Site) -> None:
    store = site.store(merge_factor=4)
    for i in range(64):
        store.market.append("AAPL", "1m", batch(i, n=10))
    merged = store.market.info("AAPL", "1m")
    assert merged.rows == 640 and merged.segments <= 4
    assert batch_ids(store.market.read("AAPL", "1m")).tolist() == np.repeat(range(64), 10).tolist()


@case("market")
def compact_merges_every_segment_and_keeps_older_versions(site: Site) -> None:
    raw = site.store(auto_compact=False)
    for i in range(16):
        raw.market.append("AAPL", "1m", batch(i, n=10))
    assert raw.market.info("AAPL", "1m").segments == 16
    before = raw.market.read("AAPL", "1m")
    info = raw.market.compact("AAPL", "1m")
    assert info is not None and info.segments == 1 and info.operation == "compact"
    assert info.version == 17
    assert raw.market.read("AAPL", "1m").equals(before)
    assert site.store().market.read("AAPL", "1m").equals(before)
    assert raw.market.compact("AAPL", "1m") is None  # nothing left to merge
    # superseded segments remain for older versions until retention
    assert raw.market.read("AAPL", "1m", version=7).num_rows == 70


def _append_in_child(root: str) -> None:
    Store(root).market.append("SPY", "1m", batch(1, 20))


@case("market", needs=("processes",))
def a_forked_child_appends_after_its_parent_did(site: Site) -> None:
    """Segment fsyncs run on a thread pool; a child forked after the parent used it must
    start its own (a copied pool has no threads: its first append would wait forever)."""
    import multiprocessing

    store = site.store()
    store.market.append("SPY", "1m", batch(0, 20))
    child = multiprocessing.get_context("fork").Process(
        target=_append_in_child, args=(str(site.root),)
    )
    child.start()
    child.join(timeout=120)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert sorted(set(batch_ids(store.market.read("SPY", "1m")))) == [0, 1]


@case("market")
def segment_files_are_read_directly_by_pyarrow_polars_and_duckdb(site: Site) -> None:
    """The layout docs/store.md promises: a manifest's segments are plain Arrow/Parquet files."""
    import duckdb
    import polars as pl
    import pyarrow.dataset as pads

    for fmt, symbol in (("arrow", "AAPL"), ("parquet", "MSFT")):
        store = site.store(segment_format=fmt)
        for i in range(3):
            store.market.append(symbol, "1m", batch(i))
        series = store.layout.series_dir(symbol, "1m")
        latest = json.loads((series / "versions/000000/v000000000003.json").read_bytes())
        files = [str(series / "segments" / s["file"]) for s in latest["segments"]]
        assert all(f.endswith("." + fmt) for f in files)
        dataset = pads.dataset(files, format="ipc" if fmt == "arrow" else "parquet")
        assert dataset.to_table().num_rows == 300
        reader = pl.read_ipc if fmt == "arrow" else pl.read_parquet
        assert sum(len(reader(f)) for f in files) == 300
        con = duckdb.connect()
        con.register("bars", dataset)
        count, total = con.execute("select count(*), sum(volume) from bars").fetchone()
        assert (count, total) == (300, 0 * 100 + 1 * 100 + 2 * 100)


@case("market")
def a_store_reads_both_segment_formats(site: Site) -> None:
    site.store(segment_format="parquet").market.append("AAPL", "1m", batch(0))
    arrow = site.store(segment_format="arrow", auto_compact=False)
    arrow.market.append("AAPL", "1m", batch(1))
    arrow.market.append("AAPL", "1m", batch(7, n=50, start_minute=75))  # rewrites both kinds
    got = arrow.market.read("AAPL", "1m")
    assert list(dict.fromkeys(batch_ids(got))) == [0, 7, 1]
    assert arrow.market.tail("AAPL", "1m", 150, columns=["close"]).num_rows == 150
    assert arrow.market.read("AAPL", "1m", start=ts(20), end=ts(30), version=1).num_rows == 11
    with pytest.raises(InvalidDataError, match="segment_format"):
        site.store(segment_format="csv")  # type: ignore[arg-type]


@case("market")
def store_marker_rules(site: Site) -> None:
    base = site.root
    foreign = base / "home"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreFormatError, match="efsray init"):
        Store(foreign)
    Store.init(foreign)  # adopting is explicit
    assert Store(foreign, create=False).market.list_series() == []
    with pytest.raises(StoreFormatError, match="not an efsray store"):
        Store(base / "absent", create=False)
    newer = base / "newer"
    Store(newer)
    (newer / ".efsray-store.json").write_text('{"format": 99}')
    with pytest.raises(StoreFormatError, match="upgrade efsray"):
        Store(newer)


@case("market")
def explicit_modes(site: Site) -> None:
    store = site.store()
    store.market.append("AAPL", "1m", batch(0))
    series = store.layout.series_dir("AAPL", "1m")
    seg = next((series / "segments").iterdir())
    assert seg.stat().st_mode & 0o777 == 0o444  # immutable once written
    assert series.stat().st_mode & 0o7777 == 0o2775


@case("market")
def bad_names_are_refused_and_nothing_is_written(site: Site) -> None:
    store = site.store()
    for bad in ("../x", "a/b", "", "\x00", "x" * 300):
        with pytest.raises(InvalidNameError):
            store.market.append(bad, "1m", batch(0))
        with pytest.raises(InvalidNameError):
            store.market.append("AAPL", bad, batch(0))
        with pytest.raises(InvalidNameError):
            store.market.read(bad, "1m")
    assert store.market.list_series() == []
    assert sorted(p.name for p in site.root.iterdir()) == [
        ".efsray-store.json",
        "logs",
        "market_data",
        "models",
        "results",
    ]


@case("market")
def malformed_bars_are_refused_and_the_series_is_unchanged(site: Site) -> None:
    """Validation happens before anything is written: a refused append or write leaves the
    committed series exactly as it was (the full list of malformed inputs is the bars
    parser's test, tests/store/test_bars.py)."""
    store = site.store()
    store.market.append("AAPL", "1m", batch(0))
    good = batch(1).to_pandas()
    bad_inputs = {
        "nan close": good.assign(close=np.where(np.arange(100) == 5, np.nan, good["close"])),
        "high below low": good.assign(high=good["low"] - 1.0),
        "negative volume": good.assign(volume=-1.0),
        "duplicate timestamps": good.assign(timestamp=good["timestamp"].iloc[0]),
        "missing open": good.drop(columns=["open"]),
    }
    for what, bars in bad_inputs.items():
        for op in (store.market.append, store.market.write):
            with pytest.raises(InvalidDataError):
                op("AAPL", "1m", bars)
            fresh = site.store().market
            assert fresh.info("AAPL", "1m").version == 1, what
            assert fresh.read("AAPL", "1m").equals(batch(0)), what
