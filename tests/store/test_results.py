"""Backtest results: save, load whole, query, validation, concurrent savers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.errors import InvalidDataError
from efsray.store import ResultStore, Store
from efsray.store.ids import derive, id_time, is_id, new_id
from tests.store import _ckpt_workers as w


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


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
