"""The seed's ``EFSDataManager`` face (async methods of the original plan) over the store:
initialize_efs_structure, save/load market data, checkpoints, backtest results and
cleanup_old_data."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from efsray.errors import CorruptionError
from efsray.store import EFSDataManager, EFSDataPath
from tests.conformance.site import Site, case
from tests.store._bars import batch


@case("seed")
def initialize_and_market_data(site: Site) -> None:
    root = site.root
    paths = EFSDataPath.from_mount_path(str(root))
    assert paths.market_data == str(root / "market_data")
    manager = EFSDataManager(str(root))

    async def scenario() -> tuple[str, list[dict], list[dict]]:
        await manager.initialize_efs_structure()
        await manager.initialize_efs_structure()  # idempotent
        location = await manager.save_market_data("AAPL", "1m", batch(0).to_pylist())
        await manager.save_market_data("AAPL", "1m", batch(1).to_pandas())
        await manager.save_market_data(
            "AAPL",
            "1m",
            {k: v.to_pylist() for k, v in zip(batch(2).column_names, batch(2).columns,
                                              strict=True)},
        )  # fmt: skip
        newest = await manager.load_market_data("AAPL", "1m", limit=150)
        missing = await manager.load_market_data("MSFT", "1m")
        return location, newest, missing

    location, newest, missing = asyncio.run(scenario())
    assert location.endswith("v000000000001.json") and Path(location).is_file()
    assert len(newest) == 150
    assert newest[0]["timestamp"] > newest[-1]["timestamp"]  # newest first
    assert newest[0]["close"] == 1002.0 and newest[-1]["close"] == 1001.0
    assert missing == []
    for sub in (
        "market_data/ohlcv",
        "market_data/indicators",
        "models/trained",
        "models/checkpoints",
        "results/backtests",
        "results/performance",
        "logs",
    ):
        assert (root / sub).is_dir()


@case("seed")
def async_methods_do_not_block_the_event_loop(site: Site) -> None:
    manager = EFSDataManager(str(site.root))
    big = batch(0, n=100_000)

    async def scenario() -> int:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.0005)  # a heartbeat, not synchronization

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        await manager.save_market_data("AAPL", "1m", big)
        await manager.load_market_data("AAPL", "1m", limit=100_000)
        during = ticks - before
        done.set()
        await task
        return during

    # a blocking implementation would let the heartbeat beat at most once while it worked
    assert asyncio.run(scenario()) > 3


def _flip_first_byte(path: Path) -> None:
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[0] ^= 0x01
    path.write_bytes(bytes(data))


@case("seed")
def save_and_load_model_checkpoint(site: Site) -> None:
    manager = EFSDataManager(site.root)
    assert asyncio.run(manager.load_model_checkpoint("lstm")) is None
    metadata = {"accuracy": 0.93, "epoch": 12}
    path = asyncio.run(manager.save_model_checkpoint("lstm", b"\x80\x04opaque", metadata))
    assert Path(path).read_bytes() == b"\x80\x04opaque"  # stored as is, never unpickled
    assert metadata["checkpoint_path"] == path and isinstance(metadata["saved_at"], float)
    data, meta = asyncio.run(EFSDataManager(site.root).load_model_checkpoint("lstm"))
    assert data == b"\x80\x04opaque"
    assert meta == {"accuracy": 0.93, "epoch": 12, "saved_at": metadata["saved_at"],
                    "checkpoint_path": path}  # fmt: skip
    # Saving again with the same (stamped) dict makes a new version; the latest wins.
    path2 = asyncio.run(manager.save_model_checkpoint("lstm", b"second", metadata))
    assert path2 != path and asyncio.run(manager.load_model_checkpoint("lstm"))[0] == b"second"
    _flip_first_byte(Path(path2))
    with pytest.raises(CorruptionError):
        asyncio.run(manager.load_model_checkpoint("lstm"))


@case("seed")
def save_backtest_results(site: Site) -> None:
    manager = EFSDataManager(site.root)
    results = {
        "total_return": 0.15,
        "sharpe_ratio": np.float64(1.2),
        "params": {"fast": 10, "slow": 30},
        "equity_curve": pd.Series([1.0, 1.1, 1.15], name="equity"),
        "notes": "first run",
        "daily_returns": [0.01, -0.02],
    }
    path = asyncio.run(manager.save_backtest_results("ma_cross", results))
    # the run is a row of the strategy's results table: the path is the table's directory
    assert Path(path).is_dir() and Path(path).name == "ma_cross"
    [run_id] = EFSDataManager(site.root).store.results.query("ma_cross")["run_id"]
    run = EFSDataManager(site.root).store.results.load(run_id)
    assert run.info.metrics == {"total_return": 0.15, "sharpe_ratio": 1.2}
    assert run.info.params == {"fast": 10, "slow": 30}
    assert run.info.extra == {"notes": "first run", "daily_returns": [0.01, -0.02]}
    assert run.equity_curve["equity"].tolist() == [1.0, 1.1, 1.15]


@case("seed")
def cleanup_old_data(site: Site) -> None:
    manager = EFSDataManager(site.root)
    report = asyncio.run(manager.cleanup_old_data(days_to_keep=7))
    assert report.files == 0 and set(report.areas) >= {"market_data", "checkpoints", "results"}
    asyncio.run(manager.save_market_data("AAPL", "1m", batch(0)))
    report = asyncio.run(manager.cleanup_old_data(days_to_keep=0))
    assert report.errors == ()
    assert len(asyncio.run(manager.load_market_data("AAPL", "1m", limit=1000))) == 100
