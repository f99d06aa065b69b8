"""The sweep's "train" step: the best parameter set as a versioned checkpoint with an alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from efsray.backtest import generate_market
from efsray.cluster.sweep import run_sweep
from efsray.cluster.train import best_model, save_best
from efsray.store import Store

pytest.importorskip(
    "efsray.store.checkpoints", reason="the store's checkpoints (issue 3) are not merged yet"
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "s")
    for symbol, table in generate_market(["A", "B"], timeframe="1h", bars=2000, seed=2).items():
        store.market.write(symbol, "1h", table)
    return store


def sweep(store: Store, grid: str):
    return run_sweep(
        store.root, symbols="A,B", timeframe="1h", strategy="ma_crossover", grid=grid,
        executor="local",
    )  # fmt: skip


def test_best_parameters_become_a_checkpoint_with_an_alias(store: Store) -> None:
    report = sweep(store, "fast=4:12:4,slow=20:60:20")
    saved = save_best(store.root, report)
    assert saved["model_id"] == "ma_crossover-1h" and saved["version"] == 1 and saved["created"]
    data, info = store.checkpoints.load_bytes("ma_crossover-1h", alias="best")
    model = json.loads(data)
    assert model == json.loads(json.dumps(best_model(report), allow_nan=False))
    assert model["params"] == dict(report.ranking("sharpe")[0].params)
    assert model["market_versions"] == {"A": 1, "B": 1} and model["sweep_id"] == report.sweep_id
    best = report.ranking("sharpe")[0]
    assert model["results"] == {p.symbol: p.result_id for p in report.points if p.key == best.key}
    for symbol, run_id in model["results"].items():  # the results it was chosen on
        run = store.results.info(run_id)
        assert run.tags["symbol"] == symbol and run.params == model["params"]
    assert info.metadata["params"] == model["params"] and info.version == 1

    # the same sweep again: the same checkpoint, no new version
    again = save_best(store.root, sweep(store, "fast=4:12:4,slow=20:60:20"))
    assert (again["version"], again["created"]) == (1, False)

    # another sweep with another winner: a new version, and the alias moves to it
    other = sweep(store, "fast=2|3,slow=90|100")
    moved = save_best(store.root, other, "sharpe")
    assert moved["version"] == 2 and moved["created"]
    assert store.checkpoints.aliases("ma_crossover-1h") == {"best": 2}


def test_cli_train(store: Store, cli) -> None:
    result = cli(
        "backtest", "--root", store.root, "--local", "--symbols", "A", "--timeframe", "1h",
        "--strategy", "momentum", "--grid", "lookback=10:30:10", "--train", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    checkpoint = result.json()["checkpoint"]
    assert checkpoint["model_id"] == "momentum-1h" and checkpoint["alias"] == "best"
    assert Path(checkpoint["path"]).is_file()
