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

from efsray.errors import CorruptionError, InvalidDataError, InvalidNameError, NotFoundError
from efsray.store import EFSDataManager, ResultStore, Store
from efsray.store.ids import id_time, new_id
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
    assert info.path.endswith(f"{info.run_id}.json")
    assert f"/momentum/{info.created_at:%Y-%m-%d}/{info.created_at:%H%M}/" in info.path
    run = store.results.load(info.run_id)
    assert run.info.metrics["sharpe"] == 1.25 and run.info.metrics["sortino"] == math.inf
    assert math.isnan(run.info.metrics["calmar"])
    assert run.info.params == {"lookback": 20, "universe": ["AAPL", "MSFT"], "start": "2024-01-01"}
    assert run.info.data_versions == {"AAPL/1d": commit.version}
    pd.testing.assert_frame_equal(run.equity_curve, curve, check_freq=False)
    pd.testing.assert_frame_equal(run.trades, trades)
    assert store.results.load(info.run_id, strategy="momentum").info == run.info
    # The stored JSON is strict JSON: no NaN tokens for other tools to choke on.
    json.loads(Path(info.path).read_text(), parse_constant=lambda c: pytest.fail(c))


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


def test_damaged_table_is_detected(store: Store) -> None:
    info = store.results.save("s", metrics={}, trades=pd.DataFrame({"x": range(100)}))
    table = Path(info.path).with_name(f"{info.run_id}.trades.parquet")
    data = bytearray(table.read_bytes())
    data[len(data) // 2] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="trades"):
        store.results.load(info.run_id)


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
    ids: list[str] = []
    for recv, p in zip(pipes, procs, strict=True):
        assert recv.poll(120)
        status, value = recv.recv()
        assert status == "ok", value
        ids.extend(value)
        p.join(10)
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
    assert Path(path).is_file() and path.endswith(".json")
    run_id = Path(path).name[:-5]
    run = manager.store.results.load(run_id)
    assert run.info.metrics == {"total_return": 0.15, "sharpe_ratio": 1.2}
    assert run.info.params == {"fast": 10, "slow": 30}
    assert run.info.extra == {"notes": "first run", "daily_returns": [0.01, -0.02]}
    assert run.equity_curve["equity"].tolist() == [1.0, 1.1, 1.15]
