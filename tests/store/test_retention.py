"""Retention on the files themselves: a lost HEAD, uncommitted segments, temporary debris, logs.

What cleanup removes and keeps through the public API, on every backend, is in the
conformance suite (tests/conformance/cases/retention.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest

from efsray.store import Store
from efsray.store.nfs import TEMP_PREFIX, VersionLog

DAY = 86400.0


def _bars(start: int, n: int = 5) -> pd.DataFrame:
    ts = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(range(start, start + n), unit="min")
    x = [float(i) for i in range(start, start + n)]
    return pd.DataFrame({"timestamp": ts, "open": x, "high": x, "low": x, "close": x, "volume": x})


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", auto_compact=False)


def test_a_series_without_head_keeps_its_history(store: Store) -> None:
    for i in range(3):
        store.market.append("SPY", "1m", _bars(i * 5))
    os.unlink(store.layout.series_dir("SPY", "1m") / "HEAD")
    store.cleanup(days=0, now=time.time() + 30 * DAY)
    assert len(Store(store.root).market.history("SPY", "1m")) == 3
    vlog = VersionLog(store.layout.series_dir("SPY", "1m"), "x")
    assert vlog.latest() is not None and vlog.latest()[0] == 3


def test_unreferenced_segments_of_running_writers_are_safe(store: Store) -> None:
    store.market.append("SPY", "1m", _bars(0))
    seg_dir = store.layout.series_dir("SPY", "1m") / "segments"
    pending = seg_dir / "seg-00000000000000000000000000000000.parquet"
    pending.write_bytes(b"PAR1 not yet committed")
    assert store.cleanup(days=0).areas["market_data"].files == 0
    assert pending.exists()
    assert store.cleanup(days=0, now=time.time() + 7200).areas["market_data"].files == 1
    assert not pending.exists()


def test_temp_debris_and_logs(store: Store) -> None:
    debris = [
        store.root / f"{TEMP_PREFIX}marker.h.1.aaaa",
        store.layout.logs / f"{TEMP_PREFIX}app.log.h.1.bbbb",
        store.layout.checkpoints / f"{TEMP_PREFIX}x.h.2.cccc",
    ]
    for path in debris:
        path.write_bytes(b"x" * 10)
    staging = store.root / f"{TEMP_PREFIX}copy.1234"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "f").write_bytes(b"y" * 7)
    old_log = store.layout.logs / "worker-1.log"
    old_log.write_bytes(b"z" * 100)
    os.utime(old_log, (time.time() - 10 * DAY,) * 2)
    new_log = store.layout.logs / "nested" / "worker-2.log"
    new_log.parent.mkdir()
    new_log.write_bytes(b"z" * 50)

    report = store.cleanup(days=7)
    assert report.areas["logs"].files == 1 and not old_log.exists() and new_log.exists()
    assert report.areas["temp"].files == 0  # younger than the grace period: a live writer's
    report = store.cleanup(days=7, now=time.time() + 7200)
    assert report.areas["temp"] == type(report.areas["temp"])(files=4, bytes=37)
    assert not any(p.exists() for p in debris) and not staging.exists()
    assert new_log.exists()


def test_an_orphaned_result_table_goes_with_the_old_runs(store: Store) -> None:
    """Which runs cleanup keeps is a conformance case (tests/conformance/cases/retention.py);
    this is the file-level part for stores written before the results table (one file per
    run, still read): a table file no run names is removed with the old runs."""
    saved = [store.results.legacy.save("s1", metrics={"x": i}) for i in range(3)]
    ids = [info.run_id for info in saved]
    run_dir = Path(saved[0].path).parent
    orphan = run_dir / f"{ids[0][:10]}0000000000000000.trades.parquet"
    orphan.write_bytes(b"PAR1")
    report = store.cleanup(days=7, now=time.time() + 8 * DAY)
    assert report.areas["results"].files == 2 + 1
    assert not orphan.exists()


def test_a_stray_file_among_the_result_tables_does_not_stop_cleanup(store: Store) -> None:
    """Only directories of results/tables are tables: a stray file there (a user's copy, an
    editor's backup) is neither listed as a strategy nor breaks retention."""
    store.results.save("s1", metrics={"x": 1.0})
    stray = store.layout.results / "tables" / "notes.txt"
    stray.write_bytes(b"x")
    report = store.cleanup(days=7, now=time.time() + 8 * DAY)
    assert report.errors == () and stray.exists()
    assert store.results.strategies() == ["s1"]
