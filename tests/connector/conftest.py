"""Helpers shared by the connector tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

SRC = Path(__file__).resolve().parents[2] / "src"


def cli_env(url: str | None, root: Path, **extra: str) -> dict[str, str]:
    """Environment for an `efsray` child: our sources first, the database and store set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEON_", "EFS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if url is not None:
        env["NEON_CONNECTION_STRING"] = url
    env["EFS_MOUNT_PATH"] = str(root)
    env.update(extra)
    return env


def efsray(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "efsray.cli.app", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bars(n: int, start: str = "2024-01-02", freq: str = "min", seed: int = 0) -> pd.DataFrame:
    """``n`` valid OHLCV bars."""
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 0.1, n))
    open_ = close + rng.normal(0, 0.05, n)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(start, periods=n, freq=freq, tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) + 0.1,
            "low": np.minimum(open_, close) - 0.1,
            "close": close,
            "volume": rng.integers(0, 1000, n).astype(float),
        }
    )
