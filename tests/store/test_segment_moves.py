"""A merge frees its inputs at once (issue 18.3: disk bytes): each input leaves a redirect
(``<input>.moved``) to the rows of the merged segment, and every older version stays readable,
exactly: full reads, ranges, tails, pinned versions, other processes reading meanwhile,
mergers killed at any instant; a damaged redirect is a CorruptionError; retention keeps
redirects while a kept version needs them."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pyarrow as pa
import pytest

from efsray.errors import CorruptionError, VersionNotFoundError
from efsray.store import Store
from tests.store import _moves_workers as mw
from tests.store._bars import EPOCH_NS, MINUTE_NS, batch
from tests.store._procs import context, join_or_kill


def _segments_dir(store: Store, symbol: str = "AAPL") -> Path:
    return store.layout.series_dir(symbol, "1m") / "segments"


def _grow(store: Store, appends: int, n: int = 37, symbol: str = "AAPL") -> dict[int, pa.Table]:
    """``appends`` appends of ``n`` bars; each version's content, read as it was committed."""
    seen = {}
    for i in range(appends):
        info = store.market.append(symbol, "1m", batch(i, n=n, start_minute=n * i))
        seen[info.version] = store.market.read(symbol, "1m")
    return seen


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_old_versions_read_exactly_after_their_segments_were_merged_away(
    tmp_path: Path, fmt: str
) -> None:
    store = Store(tmp_path / "s", merge_factor=3, segment_format=fmt)
    seen = _grow(store, 40)  # tiers 0-2 merged: redirects to merged segments, merged again
    names = os.listdir(_segments_dir(store))
    moved = [n for n in names if n.endswith(".moved")]
    live = store.market.info("AAPL", "1m").segments
    assert len(names) - len(moved) == live  # no superseded segment is left on disk
    assert len(moved) >= 30
    fresh = Store(tmp_path / "s")  # nothing cached
    for v, want in seen.items():
        assert fresh.market.read("AAPL", "1m", version=v).equals(want), v
        lo, hi = EPOCH_NS + 20 * MINUTE_NS, EPOCH_NS + (want.num_rows - 5) * MINUTE_NS
        got = fresh.market.read("AAPL", "1m", version=v, start=lo, end=hi, columns=["close"])
        part = want.filter(pa.compute.and_(
            pa.compute.greater_equal(want["timestamp"].cast(pa.int64()), lo),
            pa.compute.less_equal(want["timestamp"].cast(pa.int64()), hi),
        )).select(["timestamp", "close"])  # fmt: skip
        assert got.equals(part), v
        for n in (1, 36, 38, 200, 2000):
            tail = fresh.market.tail("AAPL", "1m", n, version=v)
            assert tail.equals(want.slice(max(0, want.num_rows - n))), (v, n)
        frame = fresh.market.read("AAPL", "1m", version=v, output="pandas")
        assert frame.equals(want.to_pandas()), v
        assert fresh.market.verify("AAPL", "1m", version=v).version == v


def test_big_merged_segments_are_read_by_row_groups_and_compacted_again(tmp_path: Path) -> None:
    """Inputs of a Parquet segment over 4 MiB (read by verified blocks, only the row groups
    holding the input's rows), and ``compact`` merging merged segments again."""
    store = Store(tmp_path / "s", merge_factor=2)
    seen = _grow(store, 4, n=150_000)
    store.market.compact("AAPL", "1m")
    fresh = Store(tmp_path / "s")
    for v, want in seen.items():
        assert fresh.market.read("AAPL", "1m", version=v).equals(want), v
        assert fresh.market.tail("AAPL", "1m", 70_000, version=v).equals(
            want.slice(want.num_rows - 70_000)
        )


def test_a_damaged_redirect_is_corruption_naming_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", merge_factor=2)
    store.market.append("AAPL", "1m", batch(0))
    store.market.append("AAPL", "1m", batch(1))  # merges 0 and 1
    (moved,) = [p for p in _segments_dir(store).iterdir() if p.name.endswith(".moved")][:1]
    raw = moved.read_bytes()
    for at in (5, len(raw) // 2, len(raw) - 2):
        damaged = bytearray(raw)
        damaged[at] ^= 0x04
        os.chmod(moved, 0o644)
        moved.unlink()  # a hard link shared with the other input's name: write a new file
        moved.write_bytes(bytes(damaged))
        for read in (
            lambda: Store(tmp_path / "s").market.read("AAPL", "1m", version=1),
            lambda: Store(tmp_path / "s").market.tail("AAPL", "1m", 3, version=1),
        ):
            with pytest.raises(CorruptionError, match=rf"redirect .*{moved.name}.*damaged"):
                read()
    assert Store(tmp_path / "s").market.read("AAPL", "1m").num_rows == 200  # latest intact


def test_a_redirect_that_does_not_describe_its_segment_is_corruption(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", merge_factor=2)
    store.market.append("AAPL", "1m", batch(0))
    store.market.append("AAPL", "1m", batch(1))  # merges 0 with its own new segment
    (moved,) = [p for p in _segments_dir(store).iterdir() if p.name.endswith(".moved")]
    # another merge's redirect under this name: checksummed, but not about this segment
    other = Store(tmp_path / "t", merge_factor=2)
    other.market.append("AAPL", "1m", batch(0))
    other.market.append("AAPL", "1m", batch(1))
    (foreign,) = [p for p in _segments_dir(other).iterdir() if p.name.endswith(".moved")]
    moved.unlink()
    moved.write_bytes(foreign.read_bytes())
    with pytest.raises(CorruptionError, match="does not describe"):
        Store(tmp_path / "s").market.read("AAPL", "1m", version=1)


def test_a_missing_segment_without_redirect_stays_an_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "s", merge_factor=2)
    store.market.append("AAPL", "1m", batch(0))
    store.market.append("AAPL", "1m", batch(1))
    for p in _segments_dir(store).iterdir():
        if p.name.endswith(".moved"):
            p.unlink()
    with pytest.raises(VersionNotFoundError, match=r"no longer complete.*seg-"):
        Store(tmp_path / "s").market.read("AAPL", "1m", version=1)


def test_retention_keeps_redirects_old_versions_need_and_removes_the_rest(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "s", merge_factor=3)
    seen = _grow(store, 30)
    latest = max(seen)
    later = time.time() + 2 * 3600
    # Nothing is old enough: every redirect stays, and every version reads.
    assert store.cleanup(days=1, now=later).areas["market_data"].files == 0
    assert Store(tmp_path / "s").market.read("AAPL", "1m", version=1).equals(seen[1])
    # Every version but the latest goes: their redirects go too (a dry run says so first).
    dry = store.cleanup(days=0, now=later, dry_run=True)
    moved = [n for n in os.listdir(_segments_dir(store)) if n.endswith(".moved")]
    assert moved and dry.areas["market_data"].files == (latest - 1) + len(moved)
    assert store.cleanup(days=0, now=later).areas["market_data"] == dry.areas["market_data"]
    names = os.listdir(_segments_dir(store))
    assert not [n for n in names if n.endswith(".moved")]
    fresh = Store(tmp_path / "s")
    assert len(names) == fresh.market.info("AAPL", "1m").segments
    assert fresh.market.read("AAPL", "1m").equals(seen[latest])


def test_retention_keeps_what_kept_versions_reach_through_chains(tmp_path: Path) -> None:
    """Files older than the grace period, versions younger than the cutoff: only debris goes
    (a crashed writer's segment), never a redirect or a segment that a kept version reaches
    through a chain of merges."""
    store = Store(tmp_path / "s", merge_factor=2)
    seen = _grow(store, 9)  # version 1's segment went through three merges
    orphan = _segments_dir(store) / "seg-0123456789abcdef0123456789abcdef.parquet"
    orphan.write_bytes(b"PAR1 a crashed writer's segment")
    before = set(os.listdir(_segments_dir(store)))
    report = store.cleanup(days=1, now=time.time() + 2 * 3600)
    assert report.areas["market_data"].files == 1
    assert set(os.listdir(_segments_dir(store))) == before - {orphan.name}
    fresh = Store(tmp_path / "s")
    for v, want in seen.items():
        assert fresh.market.read("AAPL", "1m", version=v).equals(want)


def _race_merges(root: Path, first: int, appends: int, target) -> tuple[int, str | None]:
    """Append batches ``first`` .. ``appends - 1`` (every other append merges and removes
    its inputs) while ``target`` reads in another process; its count and first failure."""
    s = mw.store(str(root))
    ctx = context()
    stop = ctx.Event()
    recv, send = ctx.Pipe(duplex=False)
    reader = ctx.Process(target=target, args=(str(root), stop, send))
    reader.start()
    try:
        for i in range(first, appends):
            s.market.append(mw.SYMBOL, mw.TIMEFRAME, batch(i, mw.ROWS))
        stop.set()
        assert recv.poll(120), "the reader did not report"
        return recv.recv()
    finally:
        stop.set()
        join_or_kill([reader])


def test_readers_in_another_process_never_fail_while_merges_remove_inputs(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    s = mw.store(str(root))
    for i in range(3):
        s.market.append(mw.SYMBOL, mw.TIMEFRAME, batch(i, mw.ROWS))
    reads, failure = _race_merges(root, 3, 60, mw.read_while_merging)
    assert failure is None, failure
    assert reads > 10


def test_sql_in_another_process_never_fails_while_merges_remove_inputs(tmp_path: Path) -> None:
    """DuckDB scans files it resolved before running; a merge may remove them meanwhile:
    the query runs again (efsray.sql), never a failure, never a partial count."""
    pytest.importorskip("duckdb", reason="SQL needs the sql extra (duckdb)")
    root = tmp_path / "s"
    mw.store(str(root)).market.append(mw.SYMBOL, mw.TIMEFRAME, batch(0, mw.ROWS))
    queries, failure = _race_merges(root, 1, 120, mw.sql_while_merging)
    assert failure is None, failure
    assert queries > 10


def test_mergers_killed_at_random_instants_leave_every_version_readable(tmp_path: Path) -> None:
    root = tmp_path / "s"
    rng = random.Random(18)
    ctx = context()
    kills = int(os.environ.get("EFSRAY_MOVES_KILLS", "24"))
    append_time = 0.01  # running estimate of one append's duration, seconds
    for _ in range(kills):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=mw.append_forever, args=(str(root), send))
        proc.start()
        send.close()
        try:
            # After its first commit, let it run a random fraction of a few appends (half of
            # them merge: redirects, then removals) and kill it wherever it is.
            assert recv.poll(60), "the writer made no commit within 60 s"
            recv.recv()
            first_at, acks = time.monotonic(), 0
            deadline = first_at + rng.uniform(0, 3 * append_time)
            while (left := deadline - time.monotonic()) > 0 and recv.poll(left):
                recv.recv()
                acks += 1
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
            assert proc.exitcode == -signal.SIGKILL
            if acks:
                append_time = 0.7 * append_time + 0.3 * (time.monotonic() - first_at) / acks
        finally:
            join_or_kill([proc])
    fresh = mw.store(str(root))
    latest = fresh.market.info(mw.SYMBOL, mw.TIMEFRAME).version
    assert latest > kills
    for v in range(1, latest + 1):
        want = mw.expected(v)
        assert fresh.market.read(mw.SYMBOL, mw.TIMEFRAME, version=v).equals(want), v
        assert fresh.market.tail(mw.SYMBOL, mw.TIMEFRAME, 5, version=v).equals(
            want.slice(want.num_rows - 5)
        ), v
    # what the kills left (inputs beside their redirects, temporary files) is garbage only
    report = fresh.cleanup(days=0, grace=0, now=time.time() + 1)
    assert not report.errors
    assert fresh.market.read(mw.SYMBOL, mw.TIMEFRAME).equals(mw.expected(latest))


def test_sql_over_a_version_whose_files_were_merged_away(tmp_path: Path) -> None:
    pytest.importorskip("duckdb", reason="SQL needs the sql extra (duckdb)")
    from efsray.sql import query

    store = Store(tmp_path / "s", merge_factor=2)
    seen = _grow(store, 4, n=50)
    for v, want in seen.items():
        got = query(store, f"SELECT count(*) AS n, sum(close) AS s FROM market('AAPL', '1m', {v})")
        assert got.to_pylist() == [{"n": want.num_rows, "s": pa.compute.sum(want["close"]).as_py()}]


def test_a_redirect_naming_a_path_outside_the_segments_is_corruption(tmp_path: Path) -> None:
    from efsray.store.segment_moves import moved_name, read_move, redirect_record
    from efsray.store.segments import Segment

    seg = Segment("seg-a.parquet", 10, 40, 0, 9)
    for name in ("../../seg-x.parquet", "seg-x.parquet/../../etc", "x.parquet"):
        (tmp_path / moved_name(seg.file)).write_bytes(
            redirect_record(Segment(name, 10, 40, 0, 9), [(seg, 0)])
        )
        with pytest.raises(CorruptionError, match="not a segment's name"):
            read_move(tmp_path, seg)
