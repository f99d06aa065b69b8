"""``efsray demo``: the main job on the embedded default (a local directory, no AWS)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from efsray.cli._common import EnvFileOpt, JsonOpt, RootOpt, console, print_json, store_root


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)


def demo_cmd(
    symbols: Annotated[int, typer.Option(help="How many symbols to generate.", min=1)] = 4,
    years: Annotated[float, typer.Option(help="Years of hourly bars per symbol.", min=0.1)] = 2.0,
    seed: Annotated[int, typer.Option(help="Random seed of the generated market.")] = 7,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Generate a market, ingest it into the store, and show what is stored.

    Safe to re-run: the same seed gives the same bars, and re-ingesting replaces them.
    """
    import numpy as np
    import pandas as pd

    from efsray.store import Store

    path: Path = store_root(root, env_file)
    store = Store(path)
    started = time.monotonic()
    rng = np.random.default_rng(seed)
    n = int(years * 252 * 7)
    index = pd.bdate_range("2022-01-03", periods=n // 7 + 1, tz="UTC").repeat(7)[:n]
    index = index + pd.to_timedelta(np.tile(np.arange(14, 21), n // 7 + 1)[:n], unit="h")
    commits = []
    for k in range(symbols):
        returns = rng.normal(0.0001, 0.004, n)
        close = 100.0 * np.exp(np.cumsum(returns))
        open_ = np.r_[close[0], close[:-1]]
        spread = np.abs(rng.normal(0, 0.002, n)) * close
        frame = pd.DataFrame(
            {
                "timestamp": index,
                "open": open_,
                "high": np.maximum(open_, close) + spread,
                "low": np.minimum(open_, close) - spread,
                "close": close,
                "volume": rng.integers(1_000, 50_000, n).astype(float),
            }
        )
        commits.append(store.market.append(f"SYM{k:02d}", "1h", frame))
    infos = store.market.infos()
    if json_out:
        print_json({"root": str(path.resolve()), "commits": commits, "series": infos})
        return
    for info in infos:
        console.print(
            f"{info.symbol}/{info.timeframe}: v{info.version}, {info.rows:,} bars "
            f"{info.start:%Y-%m-%d} .. {info.end:%Y-%m-%d}"
        )
    console.print(f"store at {path.resolve()} ({time.monotonic() - started:.1f} s)")
