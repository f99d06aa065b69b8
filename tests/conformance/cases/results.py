"""Backtest results through the public API only (save/load/info/query/existing/infos and
``save(run_id=...)`` idempotence): how runs are laid out on disk is the results engine's
business (issue 19 changes it), so no case looks at files."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from efsray.errors import InvalidDataError, InvalidNameError, NotFoundError
from efsray.store import Store
from efsray.store.ids import derive, new_id
from tests.conformance.site import Site, case
from tests.store import _ckpt_workers as w
from tests.store._runs import whole_run


@case("results")
def save_and_load_a_whole_run(site: Site) -> None:
    store = site.store()
    given = whole_run(store)
    curve, trades, [commit] = given["equity_curve"], given["trades"], given["data_versions"]
    info = store.results.save("momentum", **given)
    for reader in (store, site.store()):
        run = reader.results.load(info.run_id)
        assert run.info.metrics["sharpe"] == 1.25 and run.info.metrics["sortino"] == math.inf
        assert math.isnan(run.info.metrics["calmar"])
        assert run.info.params == {"lookback": 20, "universe": ["AAPL", "MSFT"],
                                   "start": "2024-01-01"}  # fmt: skip
        assert run.info.data_versions == {"AAPL/1d": commit.version}
        assert run.info.tags == {"sweep": "s1"} and run.info.strategy == "momentum"
        pd.testing.assert_frame_equal(run.equity_curve, curve, check_freq=False)
        pd.testing.assert_frame_equal(run.trades, trades)
        assert reader.results.load(info.run_id, strategy="momentum").info == run.info
        assert reader.results.info(info.run_id) == run.info
    if Path(info.path).suffix == ".json":  # where a run is one JSON file, it is strict JSON
        json.loads(Path(info.path).read_text(), parse_constant=lambda c: pytest.fail(c))


@case("results")
def query_filters_sorts_and_limits(site: Site) -> None:
    store = site.store()
    for i in range(6):
        store.results.save("a" if i % 2 else "b", metrics={"sharpe": i / 2, "n": i},
                           params={"k": i}, tags={"even": i % 2 == 0})  # fmt: skip
    store.results.save("a", metrics={"n": 99})  # no sharpe: fails sharpe filters
    results = site.store().results
    frame = results.query()
    assert len(frame) == 7 and {"metrics.sharpe", "params.k", "tags.even"} <= set(frame.columns)
    assert str(frame["created_at"].dtype).startswith("datetime64")
    assert list(results.query("a")["metrics.n"]) == [1, 3, 5, 99]
    assert list(results.query(where=["sharpe>=1.5"])["metrics.n"]) == [3, 4, 5]
    assert list(results.query(where=[("sharpe", "<", 1), ("n", "!=", 0)])["metrics.n"]) == [1]
    top = results.query(sort_by="sharpe", ascending=False, limit=2)
    assert list(top["metrics.n"]) == [5, 4]
    assert list(results.query(tags={"even": True})["metrics.n"]) == [0, 2, 4]
    now = dt.datetime.now(dt.UTC)
    assert len(results.query(since=now + dt.timedelta(minutes=5))) == 0
    assert len(results.query(until=now + dt.timedelta(minutes=5))) == 7
    assert len(results.query(since=(now - dt.timedelta(days=1)).isoformat())) == 7
    assert results.query("nobody").empty
    with pytest.raises(InvalidDataError, match="cannot read the filter"):
        results.query(where=["sharpe ~ 1"])


_INVALID = [
    ({"metrics": {"sharpe": "high"}}, "must be numbers"),
    ({"metrics": {"ok": True}}, "must be numbers"),
    ({"metrics": [1, 2]}, "must be a dict"),
    ({"metrics": {}, "params": {"f": lambda: 1}}, "cannot be stored as JSON"),
    ({"metrics": {}, "equity_curve": [1, 2, 3]}, "DataFrame"),
    ({"metrics": {}, "data_versions": {"AAPL": 3}}, "SYMBOL/TIMEFRAME"),
    ({"metrics": {}, "data_versions": {"AAPL/1m": 0}}, "version >= 1"),
    ({"metrics": {}, "data_versions": {"../x/1m": 1}}, "invalid symbol"),
    ({"metrics": {}, "tags": "x"}, "must be a dict"),
]


@case("results")
def invalid_runs_are_refused_and_nothing_is_saved(site: Site) -> None:
    store = site.store()
    for kwargs, match in _INVALID:
        with pytest.raises((InvalidDataError, InvalidNameError), match=match):
            store.results.save("s", **kwargs)
    assert store.results.query().empty
    info = store.results.save("s", metrics={}, params={"x": float("nan")})  # encoded, allowed
    assert math.isnan(site.store().results.info(info.run_id).params["x"])


@case("results")
def numpy_metrics_and_names(site: Site) -> None:
    store = site.store()
    info = store.results.save("s", metrics={"a": np.float32(1.5), "b": np.int64(3), "c": None})
    assert store.results.info(info.run_id).metrics == {"a": 1.5, "b": 3, "c": None}
    with pytest.raises(InvalidNameError):
        store.results.save("../etc", metrics={})
    with pytest.raises(InvalidNameError):
        store.results.load("not-an-id")
    with pytest.raises(NotFoundError):
        store.results.load(new_id())


@case("results")
def a_chosen_run_id_saves_once(site: Site) -> None:
    results = site.store().results
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    run_id = derive(when, "sweep-1/AAPL/p-1")
    run = {
        "metrics": {"sharpe": 1.5, "win_rate": math.nan, "trades": 3},
        "params": {"fast": 5, "slow": (20, 40)},
        "equity_curve": pd.DataFrame({"equity": np.linspace(1, 2, 250)}),
        "trades": pd.DataFrame({"px": np.random.default_rng(1).normal(size=30_000)}),
        "data_versions": {"AAPL/1h": 3},
        "tags": {"sweep": "sweep-1"},
    }
    first = results.save("ma", run_id=run_id, **run)
    assert first.run_id == run_id and first.created_at == when
    again = results.save("ma", run_id=run_id, **run)  # a retry: the same record
    assert again == first
    # another record under the same id is refused, whatever differs
    for change, what in (
        ({"metrics": {**run["metrics"], "sharpe": 1.6}}, "metrics"),
        ({"params": {"fast": 6, "slow": [20, 40]}}, "params"),
        ({"equity_curve": pd.DataFrame({"equity": np.linspace(1, 3, 250)})}, "equity_curve"),
        ({"equity_curve": None}, "tables"),
        ({"tags": {}}, "tags"),
    ):
        with pytest.raises(InvalidDataError, match=f"run {run_id} of ma already exists.*{what}"):
            results.save("ma", run_id=run_id, **{**run, **change})
    with pytest.raises(InvalidDataError, match="already exists"):
        results.save("ma", run_id=run_id, **{**run, "trades": pd.DataFrame({"x": [1]})})
    fresh = site.store().results
    loaded = fresh.load(run_id)
    assert loaded.info == first
    assert loaded.equity_curve["equity"].tolist() == np.linspace(1, 2, 250).tolist()
    pd.testing.assert_frame_equal(loaded.trades, run["trades"])
    assert len(fresh.query("ma")) == 1
    with pytest.raises(InvalidNameError, match="not a run id"):
        results.save("ma", run_id="run-1", **run)


@case("results")
def existing_and_infos_find_runs_by_id(site: Site) -> None:
    store = site.store()
    start = dt.datetime(2024, 5, 1, 12, 59, 58, tzinfo=dt.UTC)  # the ids span two minutes
    ids = [derive(start + dt.timedelta(milliseconds=500 * i), f"k{i}") for i in range(10)]
    saved = {i: store.results.save("s", run_id=i, metrics={"n": n}) for n, i in enumerate(ids)
             if n % 2}  # fmt: skip
    results = site.store().results
    assert results.existing("s", ids) == set(saved)
    assert results.existing("other", ids) == set()
    found = results.infos("s", ids)
    assert found == saved
    assert [found[i].metrics["n"] for i in sorted(found)] == [1, 3, 5, 7, 9]
    with pytest.raises(InvalidNameError):
        results.existing("s", ["nope"])
    with pytest.raises(InvalidNameError):
        results.infos("../x", ids)


@case("results", needs=("processes",))
def concurrent_savers_of_the_same_ids_create_each_run_once(site: Site) -> None:
    """6 processes save the same 15 runs (small and big tables) under the same chosen ids,
    at once: every save succeeds, and every saver gets the run the winner stored."""
    for big in (False, True):
        root = site.root / ("big" if big else "small")
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
        answers = w.gather(pipes, procs)
        assert all(a == answers[0] for a in answers)  # the same run (and writer) for everyone
        results = Store(root).results
        ids = [run_id for run_id, _ in answers[0]]
        assert sorted(results.query("shared")["run_id"]) == sorted(ids)
        for i, run_id in enumerate(ids):
            run = results.load(run_id)
            expected = w.same_run(i, big)
            assert run.info.params == {"i": i, "grid": [1, 2]} and run.info.metrics["i"] == i
            pd.testing.assert_frame_equal(run.equity_curve, expected["equity_curve"])
