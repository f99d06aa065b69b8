"""The distributed sweep over the shared store: real store, real Ray nodes, real SIGKILL."""

from __future__ import annotations

import collections
import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.backtest import BacktestConfig, generate_market, parse_grid
from efsray.cluster.journal import SweepJournal, result_id, sweep_result_ids
from efsray.cluster.sweep import SweepReport, plan_sweep, run_sweep
from efsray.cluster.tasks import equity_table
from efsray.errors import ConfigError, NotFoundError
from efsray.store import Store
from efsray.store.ids import id_time
from efsray.store.results.manifest import TableManifest

SYMBOLS = ["A", "B", "C", "D"]
GRID = "fast=4:12:4,slow=20:60:20"  # 9 parameter sets, all valid


@pytest.fixture(scope="module")
def market() -> dict:
    return generate_market(SYMBOLS, timeframe="1h", bars=3000, seed=5)


def make_store(root: Path, market: dict) -> Store:
    store = Store(root)
    for symbol, table in market.items():
        store.market.write(symbol, "1h", table)
    return store


def point_table(points) -> dict:
    return {(p.symbol, p.key): (dict(p.params), dict(p.metrics)) for p in points}


def assert_one_result_per_point(store: Store, report: SweepReport, expected: int):
    """Every grid point has exactly one run in store.results (found by listing, through
    query), and it is the one the report names."""
    frame = store.results.query(report.strategy, tags={"sweep": report.sweep_id})
    counts = collections.Counter(zip(frame["tags.symbol"], frame["tags.point"], strict=True))
    assert len(counts) == expected == len(frame)
    assert set(counts.values()) == {1}
    assert set(frame["run_id"]) == {p.result_id for p in report.points}
    return frame


def stored_results(store: Store, report: SweepReport) -> dict:
    """(symbol, point key) -> what a stored run holds, whole (equity curve verified)."""
    out = {}
    for point in report.points:
        run = store.results.load(point.result_id, strategy=report.strategy)
        assert (run.info.tags["symbol"], run.info.tags["point"]) == (point.symbol, point.key)
        out[(point.symbol, point.key)] = (
            run.info.params,
            run.info.metrics,
            run.info.data_versions,
            run.equity_curve["equity"].tolist(),
            run.equity_curve["timestamp"].tolist(),
        )
    return out


# --- planning and the local executor (no Ray) ------------------------------------------


def test_a_plan_for_several_workers_ends_with_small_tasks(tmp_path: Path, market: dict) -> None:
    """Cut by itself for 2 workers, a sweep's last 4 tasks are halves (a worker that runs out
    of work waits less for the others' last task); a chosen chunk size is kept as it is."""
    store = make_store(tmp_path / "s", market)
    kwargs = {"symbols": "A,B,C,D", "timeframe": "1h", "strategy": "ma_crossover",
              "grid": "fast=2:12:2,slow=20:60:10"}  # fmt: skip
    plan = plan_sweep(store, parallelism=2, **kwargs)
    # 30 points x 4 symbols, 6 tasks wanted: 2 per symbol; the last 4 (C's and D's) halved
    assert [len(t.points) for t in plan.tasks] == [15] * 4 + [8, 7] * 4
    assert [t.task_key for t in plan.tasks][-4:] == ["D.0", "D.1", "D.2", "D.3"]
    indices = [t.first_index + i for t in plan.tasks for i in range(len(t.points))]
    assert sorted(indices) == list(range(plan.size))
    one = plan_sweep(store, parallelism=1, **kwargs)
    assert [len(t.points) for t in one.tasks] == [30] * 4  # one worker: no tail to even out
    chosen = plan_sweep(store, parallelism=2, chunk_size=30, **kwargs)
    assert [len(t.points) for t in chosen.tasks] == [30] * 4


def test_plan_pins_versions_and_covers_every_point_once(tmp_path: Path, market: dict) -> None:
    store = make_store(tmp_path / "s", market)
    store.market.append("A", "1h", market["A"].slice(2990))  # A is now at version 2
    plan = plan_sweep(
        store,
        symbols="all",
        timeframe="1h",
        strategy="ma_crossover",
        grid="fast=2:12:2,slow=10:40:10",
        parallelism=4,
    )
    assert plan.versions == {"A": 2, "B": 1, "C": 1, "D": 1}
    assert len(plan.points) == 22 and len(plan.rejected) == 2  # fast=10|12 vs slow=10
    covered = collections.Counter(
        (t.symbol, tuple(sorted(p.items()))) for t in plan.tasks for p in t.points
    )
    assert len(covered) == plan.size == 88 and set(covered.values()) == {1}
    # every point has its own place in the sweep's order (the time of its result id)
    indices = [t.first_index + i for t in plan.tasks for i in range(len(t.points))]
    assert sorted(indices) == list(range(88)) and len(plan.tasks) > 4
    assert all(t.version == plan.versions[t.symbol] for t in plan.tasks)
    assert all(t.created_at == "" for t in plan.tasks)  # recorded by prepare_sweep
    # the same inputs give the same sweep id, whatever the cut; other inputs another one
    again = plan_sweep(
        store, symbols="all", timeframe="1h", strategy="ma_crossover",
        grid="fast=2:12:2,slow=10:40:10", parallelism=1,
    )  # fmt: skip
    assert again.sweep_id == plan.sweep_id and len(again.tasks) != len(plan.tasks)
    costly = plan_sweep(
        store, symbols="all", timeframe="1h", strategy="ma_crossover",
        grid="fast=2:12:2,slow=10:40:10", config=BacktestConfig(fee_bps=5),
    )  # fmt: skip
    assert costly.sweep_id != plan.sweep_id
    store.market.append("B", "1h", market["B"].slice(2990))
    moved = plan_sweep(
        store, symbols="all", timeframe="1h", strategy="ma_crossover",
        grid="fast=2:12:2,slow=10:40:10",
    )  # fmt: skip
    assert moved.sweep_id != plan.sweep_id and moved.versions["B"] == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"symbols": "A,Z"}, NotFoundError, "no 1h bars for 'Z'.*stored 1h symbols: A, B, C, D"),
        ({"symbols": "A,A"}, ConfigError, "duplicates"),
        ({"symbols": ""}, ConfigError, "no symbols given"),
        ({"symbols": "all", "timeframe": "5m"}, NotFoundError, "no 5m series"),
        ({"symbols": "A", "grid": "fast=50,slow=10"}, ConfigError, "every one of the 1 grid"),
        ({"symbols": "A", "grid": "fats=5,slow=10"}, ConfigError, "no parameter 'fats'"),
        ({"symbols": "A", "strategy": "nope"}, ConfigError, "unknown strategy"),
        ({"symbols": "A", "timeframe": "1H"}, ConfigError, "lowercase"),
    ],
)
def test_bad_sweeps_fail_before_any_work(
    tmp_path: Path, market: dict, kwargs: dict, error: type, match: str
) -> None:
    store = make_store(tmp_path / "s", market)
    args = {"timeframe": "1h", "strategy": "ma_crossover", "grid": GRID, **kwargs}
    with pytest.raises(error, match=match):
        plan_sweep(store, **args)
    assert not (store.layout.results / "sweeps").exists()
    assert store.results.query().empty


def test_local_sweep_is_resumable_and_ranks(tmp_path: Path, market: dict) -> None:
    store = make_store(tmp_path / "s", market)
    seen = []
    report = run_sweep(
        store.root, symbols="A,B", timeframe="1h", strategy="momentum",
        grid="lookback=5:40:5,threshold=0|0.01", executor="local",
        progress=lambda done, total, failed: seen.append((done, total, failed)),
    )  # fmt: skip
    assert report.ok and report.computed == 32 and report.reused == 0
    assert seen[-1] == (32, 32, 0)
    assert_one_result_per_point(store, report, 32)
    ranking = report.ranking("sharpe")
    sharpes = [r.sharpe for r in ranking]
    assert sharpes == sorted(sharpes, reverse=True) and [r.rank for r in ranking] == list(
        range(1, 17)
    )
    drawdowns = [r.max_drawdown for r in report.ranking("max_drawdown")]
    assert drawdowns == sorted(drawdowns)  # lower is better
    with pytest.raises(ConfigError, match="cannot rank by 'luck'"):
        report.ranking("luck")
    again = run_sweep(
        store.root, symbols="A,B", timeframe="1h", strategy="momentum",
        grid="lookback=5:40:5,threshold=0|0.01", executor="local",
    )  # fmt: skip
    assert again.sweep_id == report.sweep_id
    assert again.computed == 0 and again.reused == 32
    assert point_table(again.points) == point_table(report.points)
    assert [p.result_id for p in again.points] == [p.result_id for p in report.points]
    tables = store.layout.results / "tables"
    before = {p: p.stat().st_ino for p in tables.rglob("*") if p.is_file()}
    assert before
    assert_one_result_per_point(store, again, 32)
    # nothing was rewritten, and the symbols' order does not make another sweep
    swapped = run_sweep(
        store.root, symbols="B,A", timeframe="1h", strategy="momentum",
        grid="lookback=5:40:5,threshold=0|0.01", executor="local",
    )  # fmt: skip
    assert swapped.sweep_id == report.sweep_id and swapped.reused == 32
    assert {p: p.stat().st_ino for p in tables.rglob("*") if p.is_file()} == before


def test_results_hold_what_a_reproducible_run_needs(tmp_path: Path, market: dict) -> None:
    store = make_store(tmp_path / "s", market)
    report = run_sweep(
        store.root, symbols="C", timeframe="1h", strategy="mean_reversion",
        grid="window=20|40,entry_z=1.5|2", executor="local",
    )  # fmt: skip
    spec = SweepJournal(store).read_spec(report.sweep_id)
    assert spec["market"] == {"C": 1} and spec["strategy"] == "mean_reversion"
    # result ids are derived from the recorded definition: anyone can find them
    assert sweep_result_ids(spec, report.sweep_id) == [p.result_id for p in report.points]
    for point in report.points:
        run = store.results.load(point.result_id)
        info = run.info
        assert info.strategy == "mean_reversion" and info.data_versions == {"C/1h": 1}
        assert info.tags == {"sweep": report.sweep_id, "symbol": "C", "timeframe": "1h",
                             "point": point.key}  # fmt: skip
        assert info.extra["market"]["bars"] == 3000 and info.extra["config"]["fee_bps"] == 1.0
        assert info.params["exit_z"] == 0.5  # defaults are recorded too
        assert info.metrics == dict(point.metrics) and info.params == dict(point.params)
        equity = run.equity_curve
        assert list(equity.columns) == ["timestamp", "equity"] and len(equity) == 250
        assert str(equity["timestamp"].dtype) == "datetime64[ns, UTC]"
        assert equity["equity"].iloc[0] == 1.0
        assert equity["equity"].iloc[-1] == pytest.approx(1 + info.metrics["total_return"])
    # the ids' times: the sweep's creation time plus each point's index, in milliseconds
    created = dt.datetime.fromisoformat(spec["created_at"])
    times = [store.results.info(p.result_id).created_at for p in report.points]
    assert times == [created + dt.timedelta(milliseconds=i) for i in range(4)]
    # one batch per task -> one segment (with its sidecar) per task
    assert len(store.results.files("mean_reversion")) == report.tasks


@pytest.mark.parametrize("size", [1, 9, 2000, 120_000])
def test_result_ids_of_a_sweep_are_contiguous_ranges_in_sweep_order(size: int) -> None:
    created = dt.datetime(2024, 5, 1, 12, 34, 56, 789123, tzinfo=dt.UTC)
    ids = [result_id("sw-x", created, i, size, "A", f"p-{i}") for i in range(size)]
    assert len(set(ids)) == size
    # time-ordered by index: a task's points (consecutive indexes) are one id range
    assert ids == sorted(ids)
    start = created.replace(microsecond=789000)
    assert [id_time(i) for i in ids[:3]] == [start + dt.timedelta(milliseconds=k) for k in
                                             range(min(3, size))]  # fmt: skip
    with pytest.raises(ValueError, match="outside"):
        result_id("sw-x", created, size, size, "A", "p")


# --- on the multi-node Ray cluster ------------------------------------------------------


@pytest.mark.ray
def test_sweep_spreads_over_all_nodes_and_matches_a_single_process_run(
    ray_cluster, tmp_path: Path, market: dict
) -> None:
    distributed = make_store(tmp_path / "ray", market)
    reference = make_store(tmp_path / "local", market)
    kwargs = {
        "symbols": "all",
        "timeframe": "1h",
        "strategy": "ma_crossover",
        "grid": GRID,
        "chunk_size": 3,
    }
    report = run_sweep(distributed.root, executor="ray", **kwargs)
    assert report.ok, report.failures
    assert report.tasks == 12 and report.computed == 36
    # tasks ran on every node of the cluster, and so did the saves
    nodes = set(ray_cluster.node_ids.values())
    assert set(report.nodes) == nodes
    frame = assert_one_result_per_point(distributed, report, 36)
    node_of_pid = {o.pid: o.node_id for o in report.outcomes}
    assert {node_of_pid[int(w.rsplit(":", 1)[1])] for w in frame["writer"]} == nodes

    local = run_sweep(reference.root, executor="local", **kwargs)
    assert local.sweep_id == report.sweep_id
    assert point_table(report.points) == point_table(local.points)
    assert stored_results(distributed, report) == stored_results(reference, local)

    # a re-run finds every result and computes (and writes) nothing
    tables = distributed.layout.results / "tables"
    before = {p: p.stat().st_ino for p in tables.rglob("*") if p.is_file()}
    again = run_sweep(distributed.root, executor="ray", **kwargs)
    assert again.ok and again.computed == 0 and again.reused == 36
    assert_one_result_per_point(distributed, again, 36)
    assert {p: p.stat().st_ino for p in tables.rglob("*") if p.is_file()} == before


@pytest.mark.ray
def test_worker_killed_mid_write_is_retried_and_leaves_no_partial_result(
    ray_cluster, tmp_path: Path, market: dict
) -> None:
    store = make_store(tmp_path / "s", market)
    kwargs = {
        "symbols": "A,B",
        "timeframe": "1h",
        "strategy": "ma_crossover",
        "grid": GRID,
        "chunk_size": 9,
        "batch_size": 3,
    }
    report = run_sweep(
        store.root, executor="ray", hook="tests.sweep_hooks:kill_mid_write", **kwargs
    )
    marker = json.loads((tmp_path / "killed-mid-write").read_text())  # the kill happened
    assert report.ok, report.failures
    assert report.retried == {marker["task"]: 2}
    # the dead writer's bytes are debris no manifest names, never a visible run
    table = store.layout.results / "tables" / "ma_crossover"
    debris = sorted(table.rglob(".efsray-tmp.*"))
    assert debris and all(f".{marker['pid']}." in p.name for p in debris)
    torn = table / "data" / f"{marker['run_id']}-deadbeef0000.parquet"
    assert torn.exists() and torn not in store.results.files("ma_crossover")
    frame = assert_one_result_per_point(store, report, 18)
    for point in report.points:  # every visible run is whole: its row and its equity curve
        store.results.load(point.result_id, strategy="ma_crossover")
    writers = zip(frame["run_id"], frame["writer"], strict=True)
    pid_of = {run_id: int(w.rsplit(":", 1)[1]) for run_id, w in writers}
    assert pid_of[marker["run_id"]] != marker["pid"]  # saved by the retry
    # the retry resumed: what the dead attempt had saved was reused, the rest computed
    killed = next(o for o in report.outcomes if o.task_key == marker["task"])
    saved_before = sum(
        1
        for p in report.points
        if p.symbol == killed.symbol and pid_of[p.result_id] == marker["pid"]
    )
    assert killed.attempt == 1 and killed.pid != marker["pid"]
    assert killed.reused == saved_before >= 3 and killed.computed == 9 - saved_before
    clean_store = make_store(tmp_path / "clean", market)
    clean = run_sweep(clean_store.root, executor="local", **kwargs)
    assert point_table(clean.points) == point_table(report.points)
    assert stored_results(clean_store, clean) == stored_results(store, report)


@pytest.mark.ray
def test_failed_tasks_are_reported_and_retryable_errors_retried(
    ray_cluster, tmp_path: Path, market: dict
) -> None:
    store = make_store(tmp_path / "s", market)
    kwargs = {"timeframe": "1h", "strategy": "ma_crossover", "grid": GRID, "chunk_size": 9}
    report = run_sweep(
        store.root, executor="ray", symbols="A,B,C", hook="tests.sweep_hooks:fail_symbol_b",
        max_retries=2, **kwargs,
    )  # fmt: skip
    assert not report.ok
    assert [(f.task_key, f.symbol, f.points) for f in report.failures] == [("B.0", "B", 9)]
    assert "symbol B is broken on purpose" in report.failures[0].error
    assert {p.symbol for p in report.points} == {"A", "C"} and len(report.points) == 18
    assert report.retried == {}  # not retryable: one attempt

    flaky = run_sweep(
        make_store(tmp_path / "f", market).root, executor="ray", symbols="A",
        hook="tests.sweep_hooks:storage_error_once", **kwargs,
    )  # fmt: skip
    assert flaky.ok and flaky.retried == {"A.0": 2}


@pytest.mark.ray
def test_backtest_cli_on_the_cluster(ray_cluster, tmp_path: Path, market: dict, cli) -> None:
    store = make_store(tmp_path / "s", market)
    args = ["backtest", "--root", store.root, "--address", ray_cluster.address, "--timeframe", "1h"]
    result = cli(*args, "--strategy", "momentum", "--grid", "lookback=10|20,threshold=0", "--json")
    assert result.code == 0, result.err
    out = result.json()
    assert out["summary"]["points"] == 8 and out["summary"]["failed_tasks"] == 0
    assert [r["rank"] for r in out["ranking"]] == [1, 2]
    assert {p["symbol"] for p in out["points"]} == set(SYMBOLS)
    assert Path(out["results"]).is_dir()
    sweep = out["summary"]["sweep_id"]
    listed = cli("results", "ls", "--root", store.root, "--tag", f"sweep={sweep}", "--json")
    assert listed.code == 0, listed.err
    assert sorted(r["run_id"] for r in listed.json()) == sorted(
        p["result_id"] for p in out["points"]
    )
    one = cli("results", "ls", "--root", store.root, "-s", "momentum", "--tag", f"sweep={sweep}",
              "--tag", "symbol=A", "--sort", "sharpe", "--json").json()  # fmt: skip
    assert {r["tags.symbol"] for r in one} == {"A"} and len(one) == 2
    assert (
        cli("results", "ls", "--root", store.root, "--tag", "sweep=sw-other", "--json").json() == []
    )
    shown = cli("results", "show", out["points"][0]["result_id"], "--root", store.root, "--json")
    assert shown.code == 0 and shown.json()["table_shapes"]["equity_curve"]["rows"] == 250

    table = cli(*args, "--strategy", "momentum", "--grid", "lookback=10|20,threshold=0")
    assert table.code == 0 and "best parameter sets by mean sharpe" in table.out
    assert "8/8 backtests (0 computed, 8 reused)" in " ".join(table.out.split())

    bad = cli(*args, "--grid", "fast=5:50:0")
    assert bad.code == 2 and "step must be > 0" in bad.err

    failing = cli(*args, "--symbols", "A,NOPE", "--grid", "fast=5,slow=20")
    assert failing.code == 3 and "no 1h bars for 'NOPE'" in failing.err


def test_backtest_cli_local_and_strategies(tmp_path: Path, market: dict, cli) -> None:
    store = make_store(tmp_path / "s", market)
    result = cli(
        "backtest", "--root", store.root, "--local", "--symbols", "A", "--timeframe", "1h",
        "--strategy", "mean_reversion", "--grid", "window=10:30:10", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert result.json()["summary"]["executor"] == "local"
    listing = cli("strategies", "--json")
    assert {s["name"] for s in listing.json()} == {"ma_crossover", "momentum", "mean_reversion"}
    rank = cli("backtest", "--root", store.root, "--local", "--rank-by", "luck")
    assert rank.code == 2 and "--rank-by 'luck'" in rank.err


@given(n=st.integers(1, 5000), limit=st.integers(2, 400))
def test_equity_curves_keep_their_ends_and_order(n: int, limit: int) -> None:
    values = np.arange(n, dtype=np.float64)
    table = equity_table(np.arange(n, dtype=np.int64) * 60_000_000_000, values, limit)
    kept = table.column("equity").to_numpy()
    assert len(kept) == min(n, limit) and kept[0] == 0 and kept[-1] == n - 1
    assert (np.diff(kept) > 0).all()
    assert str(table.schema.field("timestamp").type) == "timestamp[ns, tz=UTC]"


def test_grid_of_the_cli_default_parses() -> None:
    assert parse_grid("fast=5:50:5,slow=20:200:20").size == 100


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_through_the_ray_client(ray_cluster, tmp_path: Path, market: dict) -> None:
    """`efsray backtest --address ray://...` from another process: the planning and the
    bookkeeping run on the cluster (a Ray Client need not mount the store), the results are
    the same as a single-process run."""
    store = make_store(tmp_path / "s", market)
    env = ray_cluster.subprocess_env()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    address = ray_cluster.client_address
    args = ["--address", address, "--root", store.root, "--symbols", "A,B", "--timeframe", "1h"]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "efsray.cli.app",
            "backtest",
            *map(str, args),
            "--grid",
            GRID,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["summary"]["points"] == 18 and out["summary"]["computed"] == 18
    local = run_sweep(
        make_store(tmp_path / "l", market).root, executor="local", symbols="A,B",
        timeframe="1h", strategy="ma_crossover", grid=GRID,
    )  # fmt: skip
    assert out["summary"]["sweep_id"] == local.sweep_id
    assert {(p["symbol"], p["key"]): p["metrics"] for p in out["points"]} == {
        (p.symbol, p.key): dict(p.metrics) for p in local.points
    }


def test_a_node_without_the_store_says_so(tmp_path: Path) -> None:
    from efsray.cluster.tasks import TaskSpec, run_task
    from efsray.errors import StoreFormatError

    spec = TaskSpec(
        root=str(tmp_path / "not-mounted"), sweep_id="sw-x", run_id="r", task_key="A.0",
        symbol="A", timeframe="1h", version=1, strategy="momentum",
        points=({"lookback": 3},), config={},
    )  # fmt: skip
    with pytest.raises(StoreFormatError, match=r"cannot see the store at .*mount the shared"):
        run_task(spec)


def test_sweep_bookkeeping_is_pruned_once_its_results_are_gone(
    tmp_path: Path, market: dict
) -> None:
    import os
    import time

    store = make_store(tmp_path / "s", market)
    old = run_sweep(store.root, symbols="A", timeframe="1h", strategy="momentum",
                    grid="lookback=5|10", executor="local")  # fmt: skip
    new = run_sweep(store.root, symbols="B", timeframe="1h", strategy="momentum",
                    grid="lookback=5|10", executor="local")  # fmt: skip
    journal = SweepJournal(store)
    day_ago = time.time() - 86_400
    for dirpath, _, names in os.walk(journal.sweep_dir(old.sweep_id)):
        for name in names:
            os.utime(os.path.join(dirpath, name), (day_ago, day_ago))
    cutoff = time.time() - 3600
    # its results are still there: a re-run must find them under the same ids
    assert journal.prune(cutoff) == ([], 0, 0)
    # retention removes the results (here: the old sweep's segments, by hand)
    table = store.results.table("momentum")
    olds = {p.result_id for p in old.points}
    manifest = table.manifest()
    assert manifest is not None
    kept = tuple(s for s in manifest.segments if not any(s.holds(i) for i in olds))
    table.log.commit(lambda v, _b: TableManifest(v, "momentum", kept).to_json())
    removed, files, size = journal.prune(cutoff, dry_run=True)
    assert removed == [old.sweep_id] and files >= 2 and size > 0
    assert sorted(journal.sweeps()) == sorted([old.sweep_id, new.sweep_id])
    assert journal.prune(cutoff) == (removed, files, size)
    assert journal.sweeps() == [new.sweep_id]
    assert not any(p.name.startswith(".efsray-tmp.") for p in journal.root.iterdir())
    # a pruned sweep simply runs again
    again = run_sweep(store.root, symbols="A", timeframe="1h", strategy="momentum",
                      grid="lookback=5|10", executor="local")  # fmt: skip
    assert again.sweep_id == old.sweep_id and again.computed == 2


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=40), st.randoms())
def test_the_mean_over_symbols_does_not_depend_on_the_order_points_arrive(
    values: list[float], rnd: random.Random
) -> None:
    from efsray.cluster.sweep import _mean

    shuffled = list(values)
    rnd.shuffle(shuffled)
    assert _mean(shuffled) == _mean(values)


def test_local_sweep_retries_a_storage_error_and_reports_what_no_retry_fixes(
    tmp_path: Path, market: dict
) -> None:
    """The local executor's retries (tenacity): a task whose first attempt hits a storage
    error is retried and succeeds; a task that fails with another error is not retried."""
    store = make_store(tmp_path / "s", market)
    kwargs = {"symbols": "A,B", "timeframe": "1h", "strategy": "ma_crossover", "grid": GRID}
    report = run_sweep(store.root, executor="local", hook="tests.sweep_hooks:storage_error_once",
                       **kwargs)  # fmt: skip
    assert report.ok and len(report.retried) == 1 and set(report.retried.values()) == {2}
    assert_one_result_per_point(store, report, 18)
    failing = run_sweep(store.root, executor="local", hook="tests.sweep_hooks:fail_symbol_b",
                        max_retries=3, **{**kwargs, "grid": "fast=4|8,slow=20"})  # fmt: skip
    assert {f.symbol for f in failing.failures} == {"B"}
    assert "broken on purpose" in failing.failures[0].error
    assert failing.retried == {}
