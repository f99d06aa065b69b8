"""Backtest results: the files of the current engine (embedded tables, damaged tables, a
dead attempt's table file), id draws, and run ids.

Save, load, query, validation and save(run_id=...) idempotence through the public API are
the conformance suite's, run on every backend (tests/conformance/cases/results.py)."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.errors import CorruptionError, InvalidDataError
from efsray.store import ResultStore, Store
from efsray.store.ids import derive, id_time, is_id, new_id
from tests.store import _ckpt_workers as w


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_damaged_table_file_is_detected(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    results = ResultStore(store.layout, inline_max_bytes=0)  # every table a file of its own
    info = results.save("s", metrics={}, trades=pd.DataFrame({"x": range(100)}))
    [table] = Path(info.path).parent.glob(f"{info.run_id}.trades.*.parquet")
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="trades"):
        store.results.load(info.run_id)
    table.unlink()
    with pytest.raises(CorruptionError, match=r"trades.*missing"):
        store.results.load(info.run_id)


def _rewrite_inline(path: Path, edit) -> None:
    record = json.loads(path.read_text())
    entry = record["tables"]["equity_curve"]
    entry["inline"] = edit(entry["inline"])
    path.write_text(json.dumps(record))


def test_small_tables_are_embedded_in_the_run_file(store: Store) -> None:
    curve = pd.DataFrame(
        {"equity": np.linspace(1.0, 1.5, 250), "drawdown": np.zeros(250)},
        index=pd.date_range("2024-01-01", periods=250, freq="h", tz="UTC", name="time"),
    )
    big = pd.DataFrame({"px": np.random.default_rng(1).normal(size=30_000)})
    info = store.results.save("s", metrics={"x": 1}, equity_curve=curve, trades=big)
    directory = Path(info.path).parent
    files = sorted(p.name for p in directory.iterdir())
    assert len(files) == 2 and files[1].startswith(f"{info.run_id}.trades.")  # + the JSON
    stored = json.loads(Path(info.path).read_text())["tables"]
    assert set(stored["equity_curve"]) == {"format", "inline", "rows", "bytes", "digest"}
    assert stored["equity_curve"]["format"] == "arrow-ipc"
    assert stored["equity_curve"]["rows"] == 250 and stored["equity_curve"]["bytes"] <= 64 << 10
    assert "file" in stored["trades"] and "inline" not in stored["trades"]
    run = store.results.load(info.run_id)
    pd.testing.assert_frame_equal(run.equity_curve, curve, check_freq=False)
    pd.testing.assert_frame_equal(run.trades, big)
    assert run.info.tables == ("equity_curve", "trades")
    # the same tables stored as files load exactly the same
    as_files = ResultStore(store.layout, inline_max_bytes=0)
    other = as_files.load(as_files.save("s", metrics={}, equity_curve=curve).run_id)
    pd.testing.assert_frame_equal(other.equity_curve, run.equity_curve)
    # one run, one file: what a sweep saves per grid point
    small = store.results.save("t", metrics={}, equity_curve=curve)
    assert [p.name for p in Path(small.path).parent.iterdir()] == [f"{small.run_id}.json"]


def test_damaged_embedded_table_is_detected(store: Store) -> None:
    curve = pd.DataFrame({"equity": np.linspace(1.0, 2.0, 100)})
    info = store.results.save("s", metrics={}, equity_curve=curve)
    path = Path(info.path)
    original = path.read_text()

    def flip(text: str) -> str:  # another valid base64 character: decodes, wrong digest
        i = len(text) // 2
        return text[:i] + ("A" if text[i] != "A" else "B") + text[i + 1 :]

    _rewrite_inline(path, flip)
    with pytest.raises(CorruptionError, match=r"equity_curve.*embedded.*checksum"):
        store.results.load(info.run_id)
    _rewrite_inline(path, lambda text: text[:-8])  # truncated
    with pytest.raises(CorruptionError, match="equity_curve"):
        store.results.load(info.run_id)
    _rewrite_inline(path, lambda text: "not base64!")
    with pytest.raises(CorruptionError, match=r"equity_curve.*damaged"):
        store.results.load(info.run_id)
    path.write_text(original)
    assert (
        store.results.load(info.run_id).equity_curve["equity"].tolist() == curve["equity"].tolist()
    )
    # the run's other fields are still readable without the table
    _rewrite_inline(path, flip)
    assert store.results.info(info.run_id).tables == ("equity_curve",)


@pytest.mark.parametrize("inline", [True, False])
def test_a_retried_or_refused_save_under_a_chosen_id_writes_nothing(
    tmp_path: Path, inline: bool
) -> None:
    """The file-level side of save(run_id=...) idempotence (the public side is the
    conformance case a_chosen_run_id_saves_once): a retry and a refused save leave the
    run's directory exactly as it was, with tables embedded or in files of their own."""
    store = Store(tmp_path / "store")
    results = ResultStore(store.layout, inline_max_bytes=64 << 10 if inline else 0)
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    run_id = derive(when, "sweep-1/AAPL/p-1")
    run = {
        "metrics": {"sharpe": 1.5, "win_rate": math.nan, "trades": 3},
        "equity_curve": pd.DataFrame({"equity": np.linspace(1, 2, 250)}),
    }
    first = results.save("ma", run_id=run_id, **run)
    assert f"/ma/2024-05-01/1230/{run_id}.json" in first.path
    directory = Path(first.path).parent
    before = {p.name: p.stat().st_ino for p in directory.iterdir()}
    assert results.save("ma", run_id=run_id, **run) == first  # a retry: the same record
    assert {p.name: p.stat().st_ino for p in directory.iterdir()} == before  # nothing written
    changed = {"equity_curve": pd.DataFrame({"equity": np.linspace(1, 3, 250)})}
    with pytest.raises(InvalidDataError, match="already exists"):
        results.save("ma", run_id=run_id, **{**run, **changed})
    with pytest.raises(InvalidDataError, match="already exists"):
        results.save("ma", run_id=run_id, **{**run, "trades": pd.DataFrame({"x": [1]})})
    assert {p.name: p.stat().st_ino for p in directory.iterdir()} == before  # losers cleaned up
    assert results.load(run_id).info == first


def test_a_dead_attempts_table_file_does_not_block_the_retry(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    results = ResultStore(store.layout, inline_max_bytes=0)
    run_id = derive(dt.datetime(2024, 5, 1, tzinfo=dt.UTC), "k")
    directory = Path(results.run_path("s", run_id)).parent
    directory.mkdir(parents=True)
    dead = directory / f"{run_id}.trades.0badbeef.parquet"  # killed before its JSON
    dead.write_bytes(b"PAR1 partial")
    info = results.save("s", run_id=run_id, metrics={}, trades=pd.DataFrame({"x": [1, 2]}))
    assert results.load(run_id).trades["x"].tolist() == [1, 2]
    assert len(list(directory.iterdir())) == 3
    store.cleanup(days=365, now=time.time() + 7200)  # the run is kept; the dead file goes
    assert not dead.exists() and results.info(run_id) == info
    assert results.load(run_id).trades["x"].tolist() == [1, 2]


def test_a_taken_run_id_is_never_overwritten(store: Store) -> None:
    fixed = new_id()
    drawn = [fixed, fixed, fixed]
    results = ResultStore(store.layout, id_factory=lambda: drawn.pop() if drawn else new_id())
    first = results.save("s", metrics={"n": 1}, trades=pd.DataFrame({"x": [1]}))
    second = results.save("s", metrics={"n": 2}, trades=pd.DataFrame({"x": [2]}))
    assert first.run_id == fixed and second.run_id != fixed
    assert results.load(fixed).trades["x"].tolist() == [1]
    assert results.load(second.run_id).trades["x"].tolist() == [2]
    stuck = ResultStore(store.layout, id_factory=lambda: fixed)
    with pytest.raises(InvalidDataError, match="free run id"):
        stuck.save("s", metrics={})


def test_concurrent_savers_never_collide(tmp_path: Path) -> None:
    """8 processes save at once; 4 of them (same strategy) start by drawing the same id."""
    root = tmp_path / "store"
    Store(root)
    ctx = w.fork_context()
    go = ctx.Event()
    fixed = new_id()
    procs, pipes = [], []
    for writer in range(8):
        recv, send = ctx.Pipe(duplex=False)
        args = (str(root), writer, 25, go, send, fixed if writer < 4 else None)
        p = ctx.Process(target=w.save_runs, args=args)
        p.start()
        procs.append(p)
        pipes.append(recv)
    go.set()
    ids = [run_id for answer in w.gather(pipes, procs) for run_id in answer]
    assert len(ids) == len(set(ids)) == 200 and fixed in ids
    store = Store(root)
    frame = store.results.query()
    assert sorted(frame["run_id"]) == sorted(ids)
    for row in frame.itertuples():
        run = store.results.load(row.run_id)
        writer, i = run.info.metrics["writer"], run.info.metrics["i"]
        assert run.info.params == {"lookback": i}
        assert (run.equity_curve is not None) == bool(i % 2)


def test_ids_are_time_ordered() -> None:
    a, b = new_id(1_700_000_000.0), new_id(1_700_000_000.002)
    assert a < b and len(a) == 26
    assert id_time(a) == dt.datetime.fromtimestamp(1_700_000_000.0, dt.UTC)


@given(
    when=st.datetimes(
        min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(9999, 12, 31),
        timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-5))]),
    ),
    key=st.binary(max_size=64) | st.text(max_size=64),
    other=st.binary(max_size=64),
)  # fmt: skip
def test_derived_ids_are_deterministic_ids_of_their_time(
    when: dt.datetime, key: bytes | str, other: bytes
) -> None:
    if when.astimezone(dt.UTC).year < 1970:
        return
    run_id = derive(when, key)
    assert is_id(run_id) and run_id == derive(when, key)
    assert id_time(run_id) == when.replace(microsecond=when.microsecond // 1000 * 1000)
    naive = when.astimezone(dt.UTC).replace(tzinfo=None)
    assert derive(naive, key) == run_id  # naive means UTC
    raw = key.encode() if isinstance(key, str) else key
    assert derive(when, raw) == run_id
    if other != raw:
        assert derive(when, other) != run_id
    later = derive(when + dt.timedelta(milliseconds=1), key) if when.year < 9999 else None
    assert later is None or later > run_id


def test_derive_refuses_what_is_not_a_time_or_a_key() -> None:
    with pytest.raises(ValueError, match="outside the range"):
        derive(dt.datetime(1969, 12, 31, tzinfo=dt.UTC), "k")
    with pytest.raises(TypeError, match="datetime"):
        derive(1_700_000_000.0, "k")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="bytes or str"):
        derive(dt.datetime.now(dt.UTC), 42)  # type: ignore[arg-type]

