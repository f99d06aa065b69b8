"""Process targets for the retention races (importable by forkserver children): writers that
commit while a cleanup with no grace period (``--grace 0 --force``) runs in a loop."""

from __future__ import annotations

import traceback
from typing import Any

import numpy as np
import pyarrow as pa

from efsray.errors import EfsrayError
from efsray.store import Store
from tests.store._bars import EPOCH_NS, MINUTE_NS

MODEL = "race-model"
ROWS = 20


def bars(writer: int, n: int) -> pa.Table:
    """Append ``n`` of ``writer``: its own minutes, prices that name (writer, n)."""
    first = (n * 4 + writer) * ROWS
    ts = EPOCH_NS + (first + np.arange(ROWS, dtype=np.int64)) * MINUTE_NS
    value = np.full(ROWS, float(writer * 100_000 + n))
    return pa.table(
        {
            "timestamp": pa.array(ts, pa.timestamp("ns", tz="UTC")),
            "open": value, "high": value, "low": value, "close": value,
            "volume": np.full(ROWS, float(writer)),
        }
    )  # fmt: skip


def payload(writer: int, n: int) -> bytes:
    return f"{writer}:{n}:".encode() * 300


def _report(outcomes: dict[str, Any], exc: BaseException) -> None:
    if isinstance(exc, EfsrayError):
        outcomes["clean"].append(f"{type(exc).__name__}: {exc}")
    else:  # a raw exception: what the issue found (FileNotFoundError tracebacks)
        outcomes["raw"].append(traceback.format_exc())


def write(root: str, writer: int, what: str, stop: Any, conn: Any) -> None:
    """Append bars (``what`` "market") or save checkpoints ("checkpoint") until stopped;
    report which commits returned and which failed, cleanly or not."""
    store = Store(root, create=False)
    outcomes: dict[str, Any] = {"ok": [], "clean": [], "raw": []}
    n = 0
    while not stop.is_set() and len(outcomes["raw"]) < 5:
        try:
            if what == "market":
                store.market.append("SPY", "1m", bars(writer, n))
            else:
                store.checkpoints.save(MODEL, payload(writer, n), {"writer": writer, "n": n})
            outcomes["ok"].append(n)
        except BaseException as exc:
            _report(outcomes, exc)
        n += 1
    conn.send(outcomes)


def cleanup_loop(root: str, stop: Any, conn: Any) -> None:
    store = Store(root, create=False)
    runs = removed = 0
    raw: list[str] = []
    while not stop.is_set():
        try:
            report = store.cleanup(0, grace=0)
            removed += report.areas["market_data"].files + report.areas["checkpoints"].files
        except BaseException:
            raw.append(traceback.format_exc())
            break
        runs += 1
    conn.send((runs, removed, raw))
