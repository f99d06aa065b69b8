"""Backtest results: save, load whole, query, validation, concurrent savers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.errors import InvalidDataError, InvalidNameError, NotFoundError
from efsray.store import EFSDataManager, ResultStore, Store
from efsray.store.ids import derive, id_time, is_id, new_id
from tests.store import _ckpt_workers as w


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_save_and_load_a_whole_run(store: Store) -> None:
    curve = pd.DataFrame(
        {"equity": [100.0, 101.5, 99.0]},
        index=pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC", name="date"),
    )
    trades = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "qty": [10, -5], "px": [190.1, 410.2]})
    bars = pd.DataFrame({"timestamp": curve.index, **{c: curve["equity"].to_numpy()
                         for c in ("open", "high", "low", "close", "volume")}})  # fmt: skip
    commit = store.market.append("AAPL", "1d", bars)
    info = store.results.save(
        "momentum",
        metrics={
            "sharpe": 1.25,
            "max_dd": -0.12,
            "trades": 2,
            "sortino": math.inf,
            "calmar": math.nan,
        },
        params={"lookback": 20, "universe": ["AAPL", "MSFT"], "start": dt.date(2024, 1, 1)},
        equity_curve=curve,
        trades=trades,
        data_versions=[commit],
        tags={"sweep": "s1"},
    )
    assert info.path == str(store.layout.results / "tables" / "momentum")
    run = store.results.load(info.run_id)
    assert run.info.metrics["sharpe"] == 1.25 and run.info.metrics["sortino"] == math.inf
    assert math.isnan(run.info.metrics["calmar"])
    assert run.info.params == {"lookback": 20, "universe": ["AAPL", "MSFT"], "start": "2024-01-01"}
    assert run.info.data_versions == {"AAPL/1d": commit.version}
    pd.testing.assert_frame_equal(run.equity_curve, curve, check_freq=False)
    pd.testing.assert_frame_equal(run.trades, trades)
    assert store.results.load(info.run_id, strategy="momentum").info == run.info
    # The stored records and manifests are strict JSON: no NaN tokens for other tools.
    [segment] = store.results.files("momentum")
    record = pd.read_parquet(segment)["record"][0]
    json.loads(record, parse_constant=lambda c: pytest.fail(c))
    manifest = next((store.layout.results / "tables" / "momentum" / "versions").rglob("*.json"))
    json.loads(manifest.read_text(), parse_constant=lambda c: pytest.fail(c))


def test_query_filters_sorts_and_limits(store: Store) -> None:
    for i in range(6):
        store.results.save("a" if i % 2 else "b", metrics={"sharpe": i / 2, "n": i},
                           params={"k": i}, tags={"even": i % 2 == 0})  # fmt: skip
    store.results.save("a", metrics={"n": 99})  # no sharpe: fails sharpe filters
    frame = store.results.query()
    assert len(frame) == 7 and {"metrics.sharpe", "params.k", "tags.even"} <= set(frame.columns)
    assert str(frame["created_at"].dtype).startswith("datetime64")
    assert list(store.results.query("a")["metrics.n"]) == [1, 3, 5, 99]
    assert list(store.results.query(where=["sharpe>=1.5"])["metrics.n"]) == [3, 4, 5]
    assert list(store.results.query(where=[("sharpe", "<", 1), ("n", "!=", 0)])["metrics.n"]) == [1]
    top = store.results.query(sort_by="sharpe", ascending=False, limit=2)
    assert list(top["metrics.n"]) == [5, 4]
    assert list(store.results.query(tags={"even": True})["metrics.n"]) == [0, 2, 4]
    now = dt.datetime.now(dt.UTC)
    assert len(store.results.query(since=now + dt.timedelta(minutes=5))) == 0
    assert len(store.results.query(until=now + dt.timedelta(minutes=5))) == 7
    assert len(store.results.query(since=(now - dt.timedelta(days=1)).isoformat())) == 7
    assert store.results.query("nobody").empty
    with pytest.raises(InvalidDataError, match="cannot read the filter"):
        store.results.query(where=["sharpe ~ 1"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"metrics": {"sharpe": "high"}}, "must be numbers"),
        ({"metrics": {"ok": True}}, "must be numbers"),
        ({"metrics": [1, 2]}, "must be a dict"),
        ({"metrics": {}, "params": {"f": lambda: 1}}, "cannot be stored as JSON"),
        ({"metrics": {}, "params": {"x": float("nan")}}, None),  # encoded, allowed
        ({"metrics": {}, "equity_curve": [1, 2, 3]}, "DataFrame"),
        ({"metrics": {}, "data_versions": {"AAPL": 3}}, "SYMBOL/TIMEFRAME"),
        ({"metrics": {}, "data_versions": {"AAPL/1m": 0}}, "version >= 1"),
        ({"metrics": {}, "data_versions": {"../x/1m": 1}}, "invalid symbol"),
        ({"metrics": {}, "tags": "x"}, "must be a dict"),
    ],
)
def test_validation(store: Store, kwargs: dict, match: str | None) -> None:
    if match is None:
        store.results.save("s", **kwargs)
        return
    with pytest.raises((InvalidDataError, InvalidNameError), match=match):
        store.results.save("s", **kwargs)
    assert store.results.query().empty


def test_numpy_metrics_and_names(store: Store) -> None:
    info = store.results.save("s", metrics={"a": np.float32(1.5), "b": np.int64(3), "c": None})
    assert store.results.info(info.run_id).metrics == {"a": 1.5, "b": 3, "c": None}
    with pytest.raises(InvalidNameError):
        store.results.save("../etc", metrics={})
    with pytest.raises(InvalidNameError):
        store.results.load("not-an-id")
    with pytest.raises(NotFoundError):
        store.results.load(new_id())


def test_existing_and_infos_find_runs_by_id(store: Store) -> None:
    start = dt.datetime(2024, 5, 1, 12, 59, 58, tzinfo=dt.UTC)
    ids = [derive(start + dt.timedelta(milliseconds=500 * i), f"k{i}") for i in range(10)]
    saved = {i: store.results.save("s", run_id=i, metrics={"n": n}) for n, i in enumerate(ids)
             if n % 2}  # fmt: skip
    assert store.results.existing("s", ids) == set(saved)
    assert store.results.existing("other", ids) == set()
    found = store.results.infos("s", ids)
    assert found == saved
    assert [found[i].metrics["n"] for i in sorted(found)] == [1, 3, 5, 7, 9]
    with pytest.raises(InvalidNameError):
        store.results.existing("s", ["nope"])
    with pytest.raises(InvalidNameError):
        store.results.infos("../x", ids)


def _gather(pipes: list, procs: list) -> list:
    """Each worker's answer, in order; a worker that failed fails the test with its error."""
    answers = []
    for recv, p in zip(pipes, procs, strict=True):
        assert recv.poll(120)
        status, value = recv.recv()
        assert status == "ok", value
        answers.append(value)
        p.join(10)
    return answers


@pytest.mark.parametrize("big", [False, True], ids=["embedded", "table-files"])
def test_concurrent_savers_of_the_same_ids_create_each_run_once(tmp_path: Path, big: bool) -> None:
    """6 processes save the same 15 runs under the same chosen ids, at once: every save
    succeeds, each run is one JSON file (and one table file), and every saver gets the run
    the winner stored."""
    root = tmp_path / "store"
    Store(root)
    ctx = w.fork_context()
    go = ctx.Event()
    when = "2024-05-01T12:00:00+00:00"
    procs, pipes = [], []
    for _ in range(6):
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(target=w.save_same_runs, args=(str(root), when, 15, big, go, send))
        p.start()
        procs.append(p)
        pipes.append(recv)
    go.set()
    answers = _gather(pipes, procs)
    assert all(a == answers[0] for a in answers)  # the same run (and writer) for everyone
    store = Store(root)
    ids = [run_id for run_id, _ in answers[0]]
    frame = store.results.query("shared")
    assert sorted(frame["run_id"]) == sorted(ids)  # each run once
    table = store.layout.results / "tables" / "shared"
    assert not [p for p in table.rglob("*") if p.name.startswith(".efsray-tmp.")]
    for i, run_id in enumerate(ids):
        run = store.results.load(run_id)
        expected = w.same_run(i, big)
        assert run.info.params == {"i": i, "grid": [1, 2]} and run.info.metrics["i"] == i
        pd.testing.assert_frame_equal(run.equity_curve, expected["equity_curve"])


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
    ids = [run_id for answer in _gather(pipes, procs) for run_id in answer]
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


def test_seed_face_save_backtest_results(tmp_path: Path) -> None:
    manager = EFSDataManager(tmp_path / "store")
    results = {
        "total_return": 0.15,
        "sharpe_ratio": np.float64(1.2),
        "params": {"fast": 10, "slow": 30},
        "equity_curve": pd.Series([1.0, 1.1, 1.15], name="equity"),
        "notes": "first run",
        "daily_returns": [0.01, -0.02],
    }
    path = asyncio.run(manager.save_backtest_results("ma_cross", results))
    assert Path(path) == manager.store.layout.results / "tables" / "ma_cross"
    [run_id] = manager.store.results.query("ma_cross")["run_id"]
    run = manager.store.results.load(run_id)
    assert run.info.metrics == {"total_return": 0.15, "sharpe_ratio": 1.2}
    assert run.info.params == {"fast": 10, "slow": 30}
    assert run.info.extra == {"notes": "first run", "daily_returns": [0.01, -0.02]}
    assert run.equity_curve["equity"].tolist() == [1.0, 1.1, 1.15]
