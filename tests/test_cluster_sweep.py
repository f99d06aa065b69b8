"""The distributed sweep over the shared store: real store, real Ray nodes, real SIGKILL."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path

import pytest

from efsray.backtest import BacktestConfig, generate_market, parse_grid
from efsray.cluster.journal import SweepJournal
from efsray.cluster.sweep import plan_sweep, run_sweep
from efsray.errors import ConfigError, NotFoundError
from efsray.store import Store

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


def assert_one_record_per_point(store: Store, sweep_id: str, expected: int) -> list[dict]:
    records = SweepJournal(store).load_sweep(sweep_id)
    counts = collections.Counter((r["symbol"], r["key"]) for r in records)
    assert len(counts) == expected
    assert set(counts.values()) == {1}
    return records


# --- planning and the local executor (no Ray) ------------------------------------------


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
        batch_size=5,
    )
    assert plan.versions == {"A": 2, "B": 1, "C": 1, "D": 1}
    assert len(plan.points) == 22 and len(plan.rejected) == 2  # fast=10|12 vs slow=10
    covered = collections.Counter(
        (t.symbol, tuple(sorted(p.items()))) for t in plan.tasks for p in t.points
    )
    assert len(covered) == plan.size == 88 and set(covered.values()) == {1}
    for symbol in plan.symbols:  # tasks hold whole batches (only a symbol's last may be short)
        sizes = [len(t.points) for t in plan.tasks if t.symbol == symbol]
        assert all(n % 5 == 0 for n in sizes[:-1]) and len(sizes) > 1
    assert all(t.version == plan.versions[t.symbol] for t in plan.tasks)
    # the same inputs give the same sweep id, whatever the cut; other inputs another one
    again = plan_sweep(
        store, symbols="all", timeframe="1h", strategy="ma_crossover",
        grid="fast=2:12:2,slow=10:40:10", parallelism=1, batch_size=5,
    )  # fmt: skip
    assert again.sweep_id == plan.sweep_id and len(again.tasks) != len(plan.tasks)
    costly = plan_sweep(
        store, symbols="all", timeframe="1h", strategy="ma_crossover",
        grid="fast=2:12:2,slow=10:40:10", config=BacktestConfig(fee_bps=5), batch_size=5,
    )  # fmt: skip
    assert costly.sweep_id != plan.sweep_id
    store.market.append("B", "1h", market["B"].slice(2990))
    moved = plan_sweep(
        store, symbols="all", timeframe="1h", strategy="ma_crossover",
        grid="fast=2:12:2,slow=10:40:10", batch_size=5,
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


def test_local_sweep_is_resumable_and_ranks(tmp_path: Path, market: dict) -> None:
    store = make_store(tmp_path / "s", market)
    seen = []
    report = run_sweep(
        store.root, symbols="A,B", timeframe="1h", strategy="momentum",
        grid="lookback=5:40:5,threshold=0|0.01", executor="local", batch_size=4,
        progress=lambda done, total, failed: seen.append((done, total, failed)),
    )  # fmt: skip
    assert report.ok and report.computed == 32 and report.reused == 0
    assert seen[-1] == (32, 32, 0)
    assert_one_record_per_point(store, report.sweep_id, 32)
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
        grid="lookback=5:40:5,threshold=0|0.01", executor="local", batch_size=4,
    )  # fmt: skip
    assert again.sweep_id == report.sweep_id
    assert again.computed == 0 and again.reused == 32
    assert point_table(again.points) == point_table(report.points)
    assert_one_record_per_point(store, report.sweep_id, 32)


def test_records_hold_what_a_reproducible_run_needs(tmp_path: Path, market: dict) -> None:
    store = make_store(tmp_path / "s", market)
    report = run_sweep(
        store.root, symbols="C", timeframe="1h", strategy="mean_reversion",
        grid="window=20|40,entry_z=1.5|2", executor="local",
    )  # fmt: skip
    journal = SweepJournal(store)
    spec = journal.read_spec(report.sweep_id)
    assert spec["market"] == {"C": 1} and spec["strategy"] == "mean_reversion"
    for record in journal.load_sweep(report.sweep_id):
        assert record["market"]["version"] == 1 and record["market"]["bars"] == 3000
        assert record["params"]["exit_z"] == 0.5  # defaults are recorded too
        equity = record["equity"]
        assert len(equity["values"]) == len(equity["timestamps_ns"]) == 250
        assert equity["values"][0] == 1.0
        assert equity["values"][-1] == pytest.approx(1 + record["metrics"]["total_return"])
        json.dumps(record, allow_nan=False)


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
        "batch_size": 3,
        "chunk_size": 3,
    }
    report = run_sweep(distributed.root, executor="ray", **kwargs)
    assert report.ok, report.failures
    assert report.tasks == 12 and report.computed == 36
    # tasks ran on every node of the cluster
    assert set(report.nodes) == set(ray_cluster.node_ids.values())
    records = assert_one_record_per_point(distributed, report.sweep_id, 36)
    assert {r["written"]["node_id"] for r in records} == set(ray_cluster.node_ids.values())

    local = run_sweep(reference.root, executor="local", **kwargs)
    assert local.sweep_id == report.sweep_id
    assert point_table(report.points) == point_table(local.points)
    local_records = SweepJournal(reference).load_sweep(local.sweep_id)
    for a, b in zip(records, local_records, strict=True):
        assert (a["params"], a["metrics"], a["equity"]) == (b["params"], b["metrics"], b["equity"])

    # a re-run finds every result and computes nothing
    again = run_sweep(distributed.root, executor="ray", **kwargs)
    assert again.ok and again.computed == 0 and again.reused == 36
    assert_one_record_per_point(distributed, report.sweep_id, 36)


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
        "batch_size": 3,
        "chunk_size": 9,
    }
    report = run_sweep(
        store.root, executor="ray", hook="tests.sweep_hooks:kill_mid_write", **kwargs
    )
    marker = json.loads((tmp_path / "killed-mid-write").read_text())  # the kill happened
    assert report.ok, report.failures
    assert report.retried == {marker["task"]: 2}
    journal = SweepJournal(store)
    # the dead writer's bytes are debris under a temporary name, never a visible batch
    debris = journal.debris(report.sweep_id)
    assert len(debris) == 1 and debris[0].name.startswith(".efsray-tmp.b-")
    assert f".{marker['pid']}." in debris[0].name
    records = assert_one_record_per_point(store, report.sweep_id, 18)
    # the retry resumed: the batch saved before the kill was reused, not recomputed
    killed = next(o for o in report.outcomes if o.task_key == marker["task"])
    assert killed.attempt == 1 and killed.reused == 3 and killed.computed == 6
    assert killed.pid != marker["pid"]
    clean = run_sweep(make_store(tmp_path / "clean", market).root, executor="local", **kwargs)
    assert point_table(clean.points) == point_table(report.points)
    assert [r["metrics"] for r in records] == [
        r["metrics"] for r in SweepJournal(Store(tmp_path / "clean")).load_sweep(clean.sweep_id)
    ]


@pytest.mark.ray
def test_failed_tasks_are_reported_and_retryable_errors_retried(
    ray_cluster, tmp_path: Path, market: dict
) -> None:
    store = make_store(tmp_path / "s", market)
    kwargs = {"timeframe": "1h", "strategy": "ma_crossover", "grid": GRID, "batch_size": 9}
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


def test_old_sweeps_are_pruned_whole(tmp_path: Path, market: dict) -> None:
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
    removed, files, size = journal.prune(cutoff, dry_run=True)
    assert removed == [old.sweep_id] and files >= 3 and size > 0
    assert sorted(journal.sweeps()) == sorted([old.sweep_id, new.sweep_id])
    assert journal.prune(cutoff) == (removed, files, size)
    assert journal.sweeps() == [new.sweep_id]
    assert not any(p.name.startswith(".efsray-tmp.") for p in journal.root.iterdir())
    # a pruned sweep simply runs again
    again = run_sweep(store.root, symbols="A", timeframe="1h", strategy="momentum",
                      grid="lookback=5|10", executor="local")  # fmt: skip
    assert again.sweep_id == old.sweep_id and again.computed == 2
