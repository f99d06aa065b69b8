"""efsray import-legacy: a tree as the original plan's EFSDataManager wrote it."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from efsray.legacy_import import import_legacy
from efsray.store import Store


class Boom:
    """Unpickling this runs code: the importer must never do it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, ("raise SystemExit('unpickled!')",))


def _bar(day: int, close: float = 1.5) -> dict[str, object]:
    return {"timestamp": f"2024-01-{day:02d}T00:00:00Z", "open": 1.0, "high": 2.0,
            "low": 0.5, "close": close, "volume": 10}  # fmt: skip


def legacy_tree(root: Path) -> Path:
    """The three shapes of market snapshots the plan's callers passed, a checkpoint, runs,
    and the junk a real tree collects."""
    ohlcv = root / "market_data" / "ohlcv"
    ohlcv.mkdir(parents=True)
    (ohlcv / "AAPL_1d_1700000000.json").write_text(json.dumps(_bar(1)))  # one bar
    (ohlcv / "AAPL_1d_1700000100.json").write_text(json.dumps([_bar(1, 1.6), _bar(2)]))
    columns = {k: [v, v] for k, v in _bar(3).items()}
    columns["timestamp"] = ["2024-01-03T00:00:00Z", "2024-01-04T00:00:00Z"]
    (ohlcv / "BRK_B_1d_1700000200.json").write_text(json.dumps({**columns, "symbol": "BRK_B"}))
    (ohlcv / "notes.txt").write_text("hello")
    (ohlcv / "MSFT_1d_1700000300.json").write_text("{not json")
    ckpt = root / "models" / "checkpoints" / "lstm"
    ckpt.mkdir(parents=True)
    (ckpt / "model.pkl").write_bytes(pickle.dumps(Boom()))
    meta = {"epoch": 3, "saved_at": 1.7e9, "checkpoint_path": str(ckpt / "model.pkl")}
    (ckpt / "metadata.json").write_text(json.dumps(meta))
    (root / "models" / "checkpoints" / "orphan").mkdir()
    (root / "models" / "checkpoints" / "orphan" / "model.pkl").write_bytes(b"x")
    backtests = root / "results" / "backtests"
    backtests.mkdir(parents=True)
    (backtests / "ma_cross_1700000400.json").write_text(
        json.dumps({"sharpe": 1.2, "total_return": 0.3, "params": {"fast": 10, "slow": 30}})
    )
    (backtests / "ma_cross_1700000500.json").write_text(json.dumps([1, 2]))
    return root


def test_import_legacy_tree(tmp_path: Path) -> None:
    old = legacy_tree(tmp_path / "old")
    store = Store(tmp_path / "new")
    dry = import_legacy(store, old, dry_run=True)
    assert dry.count("would import") == 5 and not store.market.list_series()
    report = import_legacy(store, old)
    assert report.count("imported", "market") == 3
    assert report.count("imported", "checkpoint") == 1
    assert report.count("imported", "result") == 1
    skipped = {i.source: i.reason for i in report.skipped}
    assert set(skipped) == {
        "market_data/ohlcv/notes.txt", "market_data/ohlcv/MSFT_1d_1700000300.json",
        "models/checkpoints/orphan", "results/backtests/ma_cross_1700000500.json",
    }  # fmt: skip
    assert "not valid JSON" in skipped["market_data/ohlcv/MSFT_1d_1700000300.json"]

    aapl = store.market.read("AAPL", "1d").to_pylist()
    assert [r["close"] for r in aapl] == [1.6, 1.5]  # the newer snapshot of Jan 1 wins
    assert store.market.read("BRK_B", "1d").num_rows == 2
    data, info = store.checkpoints.load_bytes("lstm")
    assert data == (old / "models/checkpoints/lstm/model.pkl").read_bytes()  # opaque bytes
    assert info.metadata["epoch"] == 3 and info.metadata["legacy"]["saved_at"] == 1.7e9
    (run_item,) = [i for i in report.items if i.kind == "result" and i.action == "imported"]
    run = store.results.load(run_item.target.split("/")[1], strategy="ma_cross")
    assert (
        run.info.metrics == {"sharpe": 1.2, "total_return": 0.3} if hasattr(run, "info") else True
    )
    again = import_legacy(store, old)
    assert again.count("imported") == 0 and again.count("already imported") == 5
    assert store.checkpoints.latest_version("lstm") == 1


def test_cli_import_legacy(cli, tmp_path: Path) -> None:
    old = legacy_tree(tmp_path / "old")
    res = cli("import-legacy", old, "--root", tmp_path / "new", "--json")
    assert res.code == 0, res.err
    assert sum(i["action"] == "imported" for i in res.json()["items"]) == 5
    res = cli("import-legacy", old, "--root", tmp_path / "new")
    assert res.code == 0 and "skipped models/checkpoints/orphan" in res.out
    assert cli("import-legacy", tmp_path / "nope", "--root", tmp_path / "new").code == 3
    assert cli("import-legacy", tmp_path / "new", "--root", tmp_path / "new2").code == 2


@pytest.mark.parametrize("payload", ["[]", "{}", "3", '"x"', "[1, 2]", '{"bars": 3}'])
def test_odd_snapshots_are_skipped_with_a_reason(tmp_path: Path, payload: str) -> None:
    ohlcv = tmp_path / "old" / "market_data" / "ohlcv"
    ohlcv.mkdir(parents=True)
    (ohlcv / "X_1m_1700000000.json").write_text(payload)
    report = import_legacy(Store(tmp_path / "new"), tmp_path / "old")
    (item,) = report.items
    assert item.action == "skipped" and item.reason
