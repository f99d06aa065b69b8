"""One whole backtest run to save, the same for the results tests of both layouts (the
conformance cases save it through the table, test_results_legacy through the legacy
writer)."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import pandas as pd

from efsray.store import Store


def whole_run(store: Store) -> dict[str, Any]:
    """``save``'s keyword arguments for a run with every kind of field (NaN and infinite
    metrics, a date param, both tables, the AAPL/1d commit it read, which is appended to
    ``store`` first)."""
    curve = pd.DataFrame(
        {"equity": [100.0, 101.5, 99.0]},
        index=pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC", name="date"),
    )
    trades = pd.DataFrame({"symbol": ["AAPL", "MSFT"], "qty": [10, -5], "px": [190.1, 410.2]})
    bars = pd.DataFrame({"timestamp": curve.index, **{c: curve["equity"].to_numpy()
                         for c in ("open", "high", "low", "close", "volume")}})  # fmt: skip
    commit = store.market.append("AAPL", "1d", bars)
    return {
        "metrics": {
            "sharpe": 1.25,
            "max_dd": -0.12,
            "trades": 2,
            "sortino": math.inf,
            "calmar": math.nan,
        },
        "params": {"lookback": 20, "universe": ["AAPL", "MSFT"], "start": dt.date(2024, 1, 1)},
        "equity_curve": curve,
        "trades": trades,
        "data_versions": [commit],
        "tags": {"sweep": "s1"},
    }
