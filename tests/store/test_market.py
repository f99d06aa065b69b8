"""Market data: round trips, ranges, tails, versions, merging and compaction."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from efsray.errors import (
    CorruptionError,
    InvalidDataError,
    NotFoundError,
    StoreFormatError,
    VersionNotFoundError,
)
from efsray.store import EFSDataManager, EFSDataPath, Store
from tests.store._bars import EPOCH_NS, MINUTE_NS, batch, batch_ids


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def ts(minute: int) -> pd.Timestamp:
    return pd.Timestamp(EPOCH_NS + minute * MINUTE_NS, tz="UTC")


def test_append_and_read_round_trip(store: Store) -> None:
    info = store.market.append("AAPL", "1m", batch(0))
    assert (info.version, info.rows, info.rows_written, info.rows_replaced) == (1, 100, 100, 0)
    assert Path(info.manifest).is_file()
    got = store.market.read("AAPL", "1m")
    assert got.equals(batch(0))
    assert store.market.list_series() == [("AAPL", "1m")]


def test_outputs(store: Store) -> None:
    store.market.append("AAPL", "1m", batch(0))
    frame = store.market.read("AAPL", "1m", output="pandas")
    assert isinstance(frame, pd.DataFrame) and len(frame) == 100
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert isinstance(store.market.read("AAPL", "1m", output="polars"), pl.DataFrame)
    with pytest.raises(InvalidDataError, match="output"):
        store.market.read("AAPL", "1m", output="csv")  # type: ignore[arg-type]


def test_range_and_columns(store: Store) -> None:
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


def test_tail(store: Store) -> None:
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


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_tail_equals_the_end_of_a_full_read(tmp_path: Path, fmt: str) -> None:
    # merge often: merged segments are written from many-chunk tables
    store = Store(tmp_path / "store", merge_factor=3, segment_format=fmt)  # type: ignore[arg-type]
    for i in range(40):
        store.market.append("AAPL", "1m", batch(i, n=37, start_minute=37 * i))
    whole = store.market.read("AAPL", "1m")
    for n in (1, 36, 37, 38, 100, 500, 1479, 1480, 5000):
        assert store.market.tail("AAPL", "1m", n).equals(whole.slice(max(0, 1480 - n))), n


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_pandas_and_polars_reads_equal_the_arrow_read(tmp_path: Path, fmt: str) -> None:
    """Big whole-segment reads to pandas/polars take another path (one buffer per column,
    filled by the reader threads): it must give exactly the Arrow read's data, with an extra
    column that older segments lack and that has nulls of its own."""
    store = Store(tmp_path / "s", segment_format=fmt, merge_factor=2)  # type: ignore[arg-type]
    rows = 150_000  # 3 batches of 7.2 MB: over the threshold for parallel reads
    for i in range(3):
        bars = batch(i, n=rows)
        if i > 0:
            vwap = np.arange(rows, dtype=float)
            bars = bars.append_column("vwap", pa.array(vwap, mask=vwap % 7 == 0))
        store.market.append("AAPL", "1m", bars)
    info = store.market.info("AAPL", "1m")
    assert info.segments > 1 and info.rows == 3 * rows
    for columns in (None, ["close", "vwap"], ["volume"]):
        whole = store.market.read("AAPL", "1m", columns=columns)
        frame = store.market.read("AAPL", "1m", columns=columns, output="pandas")
        pd.testing.assert_frame_equal(frame, whole.to_pandas())
        assert store.market.read("AAPL", "1m", columns=columns, output="polars").equals(
            pl.from_arrow(whole)
        )
        part = store.market.read("AAPL", "1m", start=ts(100), end=ts(3 * rows - 100),
                                 columns=columns, output="pandas")  # fmt: skip
        pd.testing.assert_frame_equal(
            part, whole.to_pandas().iloc[100 : 3 * rows - 99].reset_index(drop=True)
        )


def test_newest_write_wins_on_equal_timestamps(store: Store) -> None:
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


def test_backfill_before_history_and_in_gaps(store: Store) -> None:
    store.market.append("AAPL", "1m", batch(5))
    store.market.append("AAPL", "1m", batch(2))
    store.market.append("AAPL", "1m", batch(9))
    ids = batch_ids(store.market.read("AAPL", "1m"))
    assert list(dict.fromkeys(ids)) == [2, 5, 9]


def test_versions_history_and_as_of(store: Store) -> None:
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


def test_missing_series(store: Store) -> None:
    with pytest.raises(NotFoundError, match="no market data for MSFT/1m"):
        store.market.read("MSFT", "1m")
    with pytest.raises(NotFoundError):
        store.market.tail("MSFT", "1m", 5, version=1)


def test_extra_columns_are_unioned(store: Store) -> None:
    store.market.append("AAPL", "1m", batch(0))
    second = batch(1).append_column("vwap", pa.array(np.full(100, 3.0)))
    store.market.append("AAPL", "1m", second)
    got = store.market.read("AAPL", "1m")
    assert got.column_names[-1] == "vwap"
    assert got.column("vwap").null_count == 100
    assert store.market.tail("AAPL", "1m", 1, columns=["vwap"]).column("vwap")[0].as_py() == 3.0


def test_auto_merge_bounds_segments_and_compact_merges_the_rest(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", merge_factor=4)
    for i in range(64):
        store.market.append("AAPL", "1m", batch(i, n=10))
    merged = store.market.info("AAPL", "1m")
    assert merged.rows == 640 and merged.segments <= 4
    raw = Store(tmp_path / "s", auto_compact=False)
    for i in range(64, 80):
        raw.market.append("AAPL", "1m", batch(i, n=10))
    assert raw.market.info("AAPL", "1m").segments >= 16
    before = raw.market.read("AAPL", "1m")
    info = raw.market.compact("AAPL", "1m")
    assert info is not None and info.segments == 1 and info.operation == "compact"
    assert raw.market.read("AAPL", "1m").equals(before)
    assert raw.market.compact("AAPL", "1m") is None  # nothing left to merge
    # superseded segments remain for older versions until retention
    assert raw.market.read("AAPL", "1m", version=70).num_rows == 700


def _append_in_child(root: str) -> None:
    Store(root).market.append("SPY", "1m", batch(1, 20))


def test_a_forked_child_appends_after_its_parent_did(tmp_path: Path) -> None:
    """Segment fsyncs run on a thread pool; a child forked after the parent used it must
    start its own (a copied pool has no threads: its first append would wait forever)."""
    import multiprocessing

    store = Store(tmp_path)
    store.market.append("SPY", "1m", batch(0, 20))
    child = multiprocessing.get_context("fork").Process(
        target=_append_in_child, args=(str(tmp_path),)
    )
    child.start()
    child.join(timeout=120)
    if child.exitcode is None:
        child.kill()
        child.join()
    assert child.exitcode == 0
    assert sorted(set(batch_ids(store.market.read("SPY", "1m")))) == [0, 1]


@pytest.mark.parametrize("fmt", ["arrow", "parquet"])
def test_segment_files_are_read_directly_by_pyarrow_polars_and_duckdb(
    tmp_path: Path, fmt: str
) -> None:
    import pyarrow.dataset as pads

    store = Store(tmp_path / "s", segment_format=fmt)
    for i in range(3):
        store.market.append("AAPL", "1m", batch(i))
    series = store.layout.series_dir("AAPL", "1m")
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


def test_a_store_reads_both_segment_formats(tmp_path: Path) -> None:
    Store(tmp_path / "s", segment_format="parquet").market.append("AAPL", "1m", batch(0))
    arrow = Store(tmp_path / "s", segment_format="arrow", auto_compact=False)
    arrow.market.append("AAPL", "1m", batch(1))
    arrow.market.append("AAPL", "1m", batch(7, n=50, start_minute=75))  # rewrites both kinds
    got = arrow.market.read("AAPL", "1m")
    assert list(dict.fromkeys(batch_ids(got))) == [0, 7, 1]
    assert arrow.market.tail("AAPL", "1m", 150, columns=["close"]).num_rows == 150
    assert arrow.market.read("AAPL", "1m", start=ts(20), end=ts(30), version=1).num_rows == 11
    with pytest.raises(InvalidDataError, match="segment_format"):
        Store(tmp_path / "s", segment_format="csv")  # type: ignore[arg-type]


def test_store_marker_rules(tmp_path: Path) -> None:
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(StoreFormatError, match="efsray init"):
        Store(foreign)
    Store.init(foreign)  # adopting is explicit
    assert Store(foreign, create=False).market.list_series() == []
    with pytest.raises(StoreFormatError, match="not an efsray store"):
        Store(tmp_path / "absent", create=False)
    newer = tmp_path / "newer"
    Store(newer)
    (newer / ".efsray-store.json").write_text('{"format": 99}')
    with pytest.raises(StoreFormatError, match="upgrade efsray"):
        Store(newer)


def test_explicit_modes(store: Store) -> None:
    store.market.append("AAPL", "1m", batch(0))
    series = store.layout.series_dir("AAPL", "1m")
    seg = next((series / "segments").iterdir())
    assert seg.stat().st_mode & 0o777 == 0o444  # immutable once written
    assert series.stat().st_mode & 0o7777 == 0o2775


def test_seed_face(tmp_path: Path) -> None:
    paths = EFSDataPath.from_mount_path(str(tmp_path / "efs"))
    assert paths.market_data == str(tmp_path / "efs" / "market_data")
    manager = EFSDataManager(str(tmp_path / "efs"))

    async def scenario() -> tuple[str, list[dict], list[dict]]:
        await manager.initialize_efs_structure()
        await manager.initialize_efs_structure()  # idempotent
        location = await manager.save_market_data("AAPL", "1m", batch(0).to_pylist())
        await manager.save_market_data("AAPL", "1m", batch(1).to_pandas())
        await manager.save_market_data(
            "AAPL",
            "1m",
            {
                k: v.to_pylist()
                for k, v in zip(batch(2).column_names, batch(2).columns, strict=True)
            },
        )
        newest = await manager.load_market_data("AAPL", "1m", limit=150)
        missing = await manager.load_market_data("MSFT", "1m")
        return location, newest, missing

    location, newest, missing = asyncio.run(scenario())
    assert location.endswith("v000000000001.json") and Path(location).is_file()
    assert len(newest) == 150
    assert newest[0]["timestamp"] > newest[-1]["timestamp"]  # newest first
    assert newest[0]["close"] == 1002.0 and newest[-1]["close"] == 1001.0
    assert missing == []
    for sub in (
        "market_data/ohlcv",
        "market_data/indicators",
        "models/trained",
        "models/checkpoints",
        "results/backtests",
        "results/performance",
        "logs",
    ):
        assert (tmp_path / "efs" / sub).is_dir()


def test_seed_async_methods_do_not_block_the_event_loop(tmp_path: Path) -> None:
    manager = EFSDataManager(str(tmp_path / "efs"))
    big = batch(0, n=100_000)

    async def scenario() -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.0005)  # a heartbeat, not synchronization

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        await manager.save_market_data("AAPL", "1m", big)
        await manager.load_market_data("AAPL", "1m", limit=100_000)
        during = ticks - before
        done.set()
        await task
        return during

    # a blocking implementation would let the heartbeat beat at most once while it worked
    assert asyncio.run(scenario()) > 3


def test_latest_survives_a_removed_head_version_and_never_restarts_at_one(store: Store) -> None:
    from efsray.errors import StorageError
    from efsray.store.nfs import VersionLog

    for i in range(6):
        store.market.append("AAPL", "1m", batch(i))
    series = store.layout.series_dir("AAPL", "1m")
    (series / "HEAD").write_text("2\n")  # a stale hint
    for v in (1, 2, 3):  # retention removed the oldest versions, the hint's among them
        (series / f"versions/000000/v{v:012d}.json").unlink()
    fresh = Store(store.root)
    assert fresh.market.info("AAPL", "1m").version == 6
    vlog = VersionLog(series, "series AAPL/1m")
    assert vlog._gallop(2)[0] in (4, 6)
    # every manifest gone but HEAD still says 2: a writer must not start a second history
    for v in (4, 5, 6):
        (series / f"versions/000000/v{v:012d}.json").unlink()
    with pytest.raises(StorageError, match="HEAD names version 2"):
        Store(store.root).market.append("AAPL", "1m", batch(9))


def test_a_writer_that_loses_rebuilds_on_the_newest_version(tmp_path: Path) -> None:
    """Others commit five versions while a writer builds its change: it loses one race, then
    rebuilds on the newest version. Stepping one version at a time, a slower writer would lose
    every race to a faster one."""
    from efsray.store.nfs import VersionLog

    mine = VersionLog(tmp_path / "log", "test log")
    others = VersionLog(tmp_path / "log", "test log")
    others.commit(lambda v, m: {"n": 1})
    bases: list[int] = []

    def build(base_version: int, base: dict[str, object] | None) -> dict[str, object]:
        bases.append(base_version)
        if len(bases) == 1:
            for _ in range(5):
                others.commit(lambda v, m: {"n": 1})
        return {"n": 1}

    committed = mine.commit(build)
    assert committed is not None and committed[0] == 7
    assert bases == [1, 6]


@pytest.mark.parametrize("change", ["longer", "shorter"])
def test_a_damaged_segment_is_reported_by_every_read_path(tmp_path: Path, change: str) -> None:
    store = Store(tmp_path / "s", merge_factor=16)
    for i in range(3):  # 3 x 7.2 MB: a whole read to pandas takes the contiguous path
        store.market.append("AAPL", "1m", batch(i, n=150_000))
    segments = sorted((store.layout.series_dir("AAPL", "1m") / "segments").iterdir())
    victim = segments[1]
    data = victim.read_bytes()
    victim.write_bytes(data + b"!" if change == "longer" else data[:-1])
    for output in ("pandas", "polars", "arrow"):
        with pytest.raises(CorruptionError, match=rf"{victim.name} has \d+ bytes"):
            store.market.read("AAPL", "1m", output=output)  # type: ignore[arg-type]
