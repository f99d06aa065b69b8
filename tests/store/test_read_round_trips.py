"""Reads on the EFS-like mount (issue 18.2): round trips of repeated and first reads, counted
by simfs with an EFS client's attribute cache, normalized like tests/store/test_round_trips.py
(one READ per 1 MiB of each file). And what makes repeated reads cheap, checked for
correctness: decoded segments kept by name must return exactly what a fresh read returns.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from efsray.simfs import SimFSProcess
from efsray.store import Store
from efsray.store.blocks import SegmentCache
from efsray.store.market import MarketDataStore
from tests.store._bars import batch
from tests.store.test_round_trips import _nfs_ops

APPENDS = 12  # 60,000 bars: the merge of the first 8 appends, then 4 small segments


@pytest.fixture
def efs(simfs_factory: Callable[..., SimFSProcess]) -> SimFSProcess:
    return simfs_factory(profile="none", attr_timeout=3.0)


def _write(root: Path) -> None:
    store = Store(root)
    for i in range(APPENDS):
        store.market.append("SPY", "1m", batch(i, 5000))


def test_repeated_reads_cost_only_the_version_probe(efs: SimFSProcess) -> None:
    """A process re-reading the latest version opens no segment: what is left is looking for
    a newer version (an open of the version directory, which revalidates it, and the probe,
    answered by the client's negative cache while the directory is unchanged)."""
    _write(efs.path / "store")
    reader = Store(efs.path / "store")
    reader.market.read("SPY", "1m")
    reader.market.tail("SPY", "1m", 1000)
    tail, tail_kinds = _nfs_ops(efs, lambda: reader.market.tail("SPY", "1m", 1000))
    full, full_kinds = _nfs_ops(efs, lambda: reader.market.read("SPY", "1m", output="pandas"))
    print(f"repeated tail(1000) {tail} {tail_kinds}, repeated full read {full} {full_kinds}")
    assert tail <= 2 and set(tail_kinds) <= {"opendir", "getattr"}
    assert full <= 2 and set(full_kinds) <= {"opendir", "getattr"}


def test_first_reads_within_budget(efs: SimFSProcess) -> None:
    """A new store handle: HEAD, the manifest, then per segment one lookup, open, READ (per
    MiB) and close; no stat before a read. tail(1000) reads one segment."""
    _write(efs.path / "store")
    segments = Store(efs.path / "store").market.info("SPY", "1m").segments
    full, kinds = _nfs_ops(efs, lambda: Store(efs.path / "store").market.read("SPY", "1m"))
    tail, tail_kinds = _nfs_ops(
        efs, lambda: Store(efs.path / "store").market.tail("SPY", "1m", 1000)
    )
    print(f"{segments} segments: first full read {full} {kinds}; first tail {tail} {tail_kinds}")
    per_file = 4  # lookup, open, read, close
    fixed = 14  # the store marker, HEAD and the manifest (4 each), the directory open, the probe
    assert full <= per_file * segments + fixed
    assert tail <= per_file + fixed
    assert kinds.get("read", 0) <= segments + 3  # whole small files: one READ each


def test_cached_parts_match_fresh_reads(tmp_path: Path) -> None:
    """Tails and range reads from decoded tables and row groups kept in the cache equal the
    same reads by a handle with no cache, column selections and time slices included."""
    _write(tmp_path / "s")
    cached = Store(tmp_path / "s").market
    fresh = Store(tmp_path / "s").market
    fresh._segments_read = SegmentCache(0)  # keeps nothing
    start = batch(3, 5000).column("timestamp")[17].as_py()
    end = batch(10, 5000).column("timestamp")[4000].as_py()
    calls: list[Callable[[MarketDataStore], Any]] = [
        lambda m: m.tail("SPY", "1m", 1000),
        lambda m: m.tail("SPY", "1m", 7000, columns=["close"]),
        lambda m: m.tail("SPY", "1m", 1),
        lambda m: m.read("SPY", "1m"),
        lambda m: m.read("SPY", "1m", start=start, end=end, columns=["volume", "high"]),
        lambda m: m.tail("SPY", "1m", 59_999),
        lambda m: m.read("SPY", "1m", output="pandas"),
    ]
    for _ in range(2):  # the first pass fills the cache, the second reads from it
        for call in calls:
            assert call(cached).equals(call(fresh))  # pa.Table or pandas.DataFrame
    assert cached._segments_read.hits > 0


def test_cache_respects_its_budget() -> None:
    cache = SegmentCache(max_bytes=1000)
    d = Path("/x")
    cache.put(d, "a", pa.py_buffer(b"a" * 200))
    cache.put(d, "b", pa.py_buffer(b"b" * 200), "table")
    assert cache.get(d, "a") is not None and cache.get(d, "b", "table") is not None
    cache.put(d, "big", pa.py_buffer(b"c" * 300))  # over a quarter: not kept
    assert cache.get(d, "big") is None
    for k in range(5):  # pushes out the least recently used
        cache.put(d, f"n{k}", pa.py_buffer(b"n" * 200))
    assert cache.get(d, "a") is None and cache.get(d, "n4") is not None
    cache.drop(d, "n4")
    assert cache.get(d, "n4") is None
    assert cache._bytes <= 1000


def test_threaded_reads_match_serial_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments read on the I/O pool's threads come back in time order, like a serial read."""
    import efsray.store.segment_reads as segments

    _write(tmp_path / "s")
    serial = Store(tmp_path / "s").market.read("SPY", "1m")
    monkeypatch.setattr(segments, "_PARALLEL_PARQUET_BYTES", 0)
    threaded = Store(tmp_path / "s")
    assert segments._parallel(
        tmp_path / "s" / "market_data" / "ohlcv" / "SPY" / "1m" / "segments",
        [
            segments.Segment.from_json(s)
            for s in threaded.market._manifest("SPY", "1m", None)[2]["segments"]
        ],
        None,
    )
    assert threaded.market.read("SPY", "1m").equals(serial)
    assert threaded.market.read("SPY", "1m", output="pandas").equals(serial.to_pandas())


@pytest.mark.parametrize("rows", [1000, 59_000])
def test_changing_a_result_leaves_the_cache_alone(tmp_path: Path, rows: int) -> None:
    """Results share the cached buffers only where they are read-only: a caller writing into
    a pandas result it got cannot change what the next read returns."""
    _write(tmp_path / "s")
    market = Store(tmp_path / "s").market
    for read in (
        lambda: market.tail("SPY", "1m", rows, output="pandas"),
        lambda: market.read("SPY", "1m", output="pandas"),
    ):
        read()  # fills the cache
        expected = read().copy(deep=True)
        got = read()
        for name in ("open", "close"):
            values = got[name].to_numpy()
            if values.flags.writeable:
                values[:] = -1.0
        assert read().equals(expected)


def test_kept_tails_follow_new_versions(tmp_path: Path) -> None:
    """A tail kept by version is handed out again only for that version: after another
    handle appends, the next tail has the new bars; the old version's tail is still kept.
    Each pandas result is a copy of its own."""
    _write(tmp_path / "s")
    market = Store(tmp_path / "s").market
    first = market.tail("SPY", "1m", 1000, output="pandas")
    again = market.tail("SPY", "1m", 1000, output="pandas")
    assert again.equals(first) and again is not first
    Store(tmp_path / "s").market.append("SPY", "1m", batch(APPENDS, 5000))
    newer = market.tail("SPY", "1m", 1000, output="pandas")
    assert set(newer["volume"]) == {float(APPENDS)}  # the new batch's bars
    assert market.tail("SPY", "1m", 1000, version=APPENDS, output="pandas").equals(first)
    assert market.tail("SPY", "1m", 1000).equals(market.tail("SPY", "1m", 1000))
    assert market.tail("SPY", "1m", 1000, output="polars").equals(
        Store(tmp_path / "s").market.tail("SPY", "1m", 1000, output="polars")
    )
    assert market.tail("SPY", "1m", 0, output="pandas").empty


def test_a_crowd_of_readers_costs_each_no_more_than_the_first(efs: SimFSProcess) -> None:
    """Issue 18.4: readers of one mount (the Ray workers of one node), each with its own store
    handle (its own caches, as a process has), reading the same latest version: every later
    reader costs no more round trips than the first, cold and after an append (the client's
    caches are shared; nothing in the read path is repeated because others read too)."""
    _write(efs.path / "store")
    handles = [Store(efs.path / "store").market for _ in range(4)]
    for step in ("cold", "after an append"):
        if step != "cold":
            Store(efs.path / "store").market.append("SPY", "1m", batch(APPENDS, 5000))
        costs = [_nfs_ops(efs, functools.partial(m.read, "SPY", "1m")) for m in handles]
        rows = {m.info("SPY", "1m").rows for m in handles}
        print(f"{step}: round trips per reader {[c for c, _ in costs]}; kinds {costs}")
        assert rows == {5000 * (APPENDS + (step != "cold"))}  # each saw the latest version
        first = costs[0][0]
        assert all(c <= first for c, _ in costs[1:]), costs
