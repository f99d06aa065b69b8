"""The legacy one-file-per-run layout: written by LegacyRuns (as efsray did before the
results table), read through the public ResultStore, which merges it into every answer."""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from efsray.errors import CorruptionError, InvalidDataError, InvalidNameError
from efsray.store import ResultStore, Store
from efsray.store.ids import derive
from tests.store._runs import whole_run


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_save_and_load_a_whole_run(store: Store) -> None:
    given = whole_run(store)
    curve, trades, [commit] = given["equity_curve"], given["trades"], given["data_versions"]
    info = store.results.legacy.save("momentum", **given)
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


def test_damaged_table_file_is_detected(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    results = ResultStore(store.layout, inline_max_bytes=0)  # every table a file of its own
    info = results.legacy.save("s", metrics={}, trades=pd.DataFrame({"x": range(100)}))
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
    info = store.results.legacy.save("s", metrics={"x": 1}, equity_curve=curve, trades=big)
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
    other = as_files.load(as_files.legacy.save("s", metrics={}, equity_curve=curve).run_id)
    pd.testing.assert_frame_equal(other.equity_curve, run.equity_curve)
    # one run, one file: what a sweep saves per grid point
    small = store.results.legacy.save("t", metrics={}, equity_curve=curve)
    assert [p.name for p in Path(small.path).parent.iterdir()] == [f"{small.run_id}.json"]


def test_damaged_embedded_table_is_detected(store: Store) -> None:
    curve = pd.DataFrame({"equity": np.linspace(1.0, 2.0, 100)})
    info = store.results.legacy.save("s", metrics={}, equity_curve=curve)
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
def test_a_chosen_run_id_saves_once(tmp_path: Path, inline: bool) -> None:
    store = Store(tmp_path / "store")
    results = ResultStore(store.layout, inline_max_bytes=64 << 10 if inline else 0)
    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    run_id = derive(when, "sweep-1/AAPL/p-1")
    run = {
        "metrics": {"sharpe": 1.5, "win_rate": math.nan, "trades": 3},
        "params": {"fast": 5, "slow": (20, 40)},
        "equity_curve": pd.DataFrame({"equity": np.linspace(1, 2, 250)}),
        "data_versions": {"AAPL/1h": 3},
        "tags": {"sweep": "sweep-1"},
    }
    first = results.legacy.save("ma", run_id=run_id, **run)
    assert first.run_id == run_id and first.created_at == when
    assert f"/ma/2024-05-01/1230/{run_id}.json" in first.path
    directory = Path(first.path).parent
    before = {p.name: p.stat().st_ino for p in directory.iterdir()}
    again = results.legacy.save("ma", run_id=run_id, **run)  # a retry: the same record
    assert again == first
    assert {p.name: p.stat().st_ino for p in directory.iterdir()} == before  # nothing written
    # another record under the same id is refused, whatever differs
    for change, what in (
        ({"metrics": {**run["metrics"], "sharpe": 1.6}}, "metrics"),
        ({"params": {"fast": 6, "slow": [20, 40]}}, "params"),
        ({"equity_curve": pd.DataFrame({"equity": np.linspace(1, 3, 250)})}, "equity_curve"),
        ({"equity_curve": None}, "tables"),
        ({"tags": {}}, "tags"),
    ):
        with pytest.raises(InvalidDataError, match=f"run {run_id} of ma already exists.*{what}"):
            results.legacy.save("ma", run_id=run_id, **{**run, **change})
    with pytest.raises(InvalidDataError, match="already exists"):
        results.legacy.save("ma", run_id=run_id, **{**run, "trades": pd.DataFrame({"x": [1]})})
    assert {p.name: p.stat().st_ino for p in directory.iterdir()} == before  # losers cleaned up
    loaded = results.load(run_id)
    assert loaded.info == first
    assert loaded.equity_curve["equity"].tolist() == np.linspace(1, 2, 250).tolist()
    with pytest.raises(InvalidNameError, match="not a run id"):
        results.legacy.save("ma", run_id="run-1", **run)


def test_a_dead_attempts_table_file_does_not_block_the_retry(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    results = ResultStore(store.layout, inline_max_bytes=0)
    run_id = derive(dt.datetime(2024, 5, 1, tzinfo=dt.UTC), "k")
    directory = Path(results.run_path("s", run_id)).parent
    directory.mkdir(parents=True)
    dead = directory / f"{run_id}.trades.0badbeef.parquet"  # killed before its JSON
    dead.write_bytes(b"PAR1 partial")
    info = results.legacy.save("s", run_id=run_id, metrics={}, trades=pd.DataFrame({"x": [1, 2]}))
    assert results.load(run_id).trades["x"].tolist() == [1, 2]
    assert len(list(directory.iterdir())) == 3
    store.cleanup(days=365, now=time.time() + 7200)  # the run is kept; the dead file goes
    assert not dead.exists() and results.info(run_id) == info
    assert results.load(run_id).trades["x"].tolist() == [1, 2]
