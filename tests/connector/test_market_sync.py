"""Market data both ways: round trip, idempotence, validation, and SIGKILL midway."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pytest

from efsray.connector import Database, PoolConfig, migrate
from efsray.connector.market import _plan_queries, export_market_data, import_market_data
from efsray.errors import InvalidDataError
from efsray.store import Store
from tests._wait import wait_for
from tests.connector.conftest import bars, cli_env, efsray

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(pg_url: str) -> Iterator[Database]:
    with Database(PoolConfig(pg_url)) as database:
        with database.connection() as conn:
            migrate(conn)
        yield database


def _db_rows(url: str, symbol: str | None = None) -> pd.DataFrame:
    where = "" if symbol is None else f"where symbol = '{symbol}'"
    with psycopg.connect(url) as conn:
        cur = conn.execute(
            "select symbol, timeframe, ts, open, high, low, close, volume "
            f"from efsray.market_bars {where} order by symbol, timeframe, ts"
        )
        frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[ns, UTC]")
    return frame


def _txids(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("select txid::text from efsray.market_bars order by 1")]


def _versions(store: Store) -> dict[tuple[str, str], int]:
    return {(s, t): store.market.info(s, t).version for s, t in store.market.list_series()}


def test_export_then_import_round_trip_and_idempotence(
    db: Database, pg_url: str, tmp_path: Path
) -> None:
    src = Store(tmp_path / "src")
    src.market.write("AAPL", "1m", bars(5000))
    src.market.write("MSFT", "1d", bars(300, freq="D", seed=1))
    src.market.write("SKIP", "1m", bars(10, seed=2))

    first = export_market_data(db, src, ["AAPL", "MSFT"])
    assert first.rows_changed == 5300
    assert len(_db_rows(pg_url)) == 5300
    txids = _txids(pg_url)
    again = export_market_data(db, src, ["AAPL", "MSFT"])
    assert again.rows_sent == 0 and again.rows_changed == 0
    assert _txids(pg_url) == txids  # not one row rewritten

    dst = Store(tmp_path / "dst")
    imported = import_market_data(db, dst)
    assert imported.rows_written == 5300 and not imported.rejected
    for symbol, tf in (("AAPL", "1m"), ("MSFT", "1d")):
        assert dst.market.read(symbol, tf).equals(src.market.read(symbol, tf))
    versions = _versions(dst)
    second = import_market_data(db, dst)
    assert second.rows_read == 0 and second.rows_written == 0
    assert _versions(dst) == versions  # nothing committed

    # The source store imports its own export back: every bar compares equal, no commit.
    src_versions = _versions(src)
    back = import_market_data(db, src)
    assert back.rows_read == 5300 and back.rows_written == 0
    assert _versions(src) == src_versions


def test_incremental_both_ways(db: Database, pg_url: str, tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    history = bars(1000)
    src.market.write("AAPL", "1m", history.iloc[:900])
    export_market_data(db, src, "*")
    dst = Store(tmp_path / "dst")
    import_market_data(db, dst)

    src.market.append("AAPL", "1m", history.iloc[900:])  # new bars only
    out = export_market_data(db, src, "*")
    assert out.rows_sent == 100 and out.rows_changed == 100

    with psycopg.connect(pg_url) as conn:  # a correction made in the database
        conn.execute(
            "update efsray.market_bars set volume = volume + 1 where ts = %s",
            (history["timestamp"].iloc[10].to_pydatetime(),),
        )
    got = import_market_data(db, dst)
    assert got.rows_read == 101 and got.rows_written == 101
    expected = src.market.read("AAPL", "1m").to_pandas()
    expected.loc[10, "volume"] += 1
    pd.testing.assert_frame_equal(dst.market.read("AAPL", "1m").to_pandas(), expected)


def test_replaced_series_is_mirrored(db: Database, pg_url: str, tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    src.market.write("AAPL", "1m", bars(100))
    export_market_data(db, src, "*")
    src.market.write("AAPL", "1m", bars(40, start="2024-01-02 00:30"))  # a shorter series
    export_market_data(db, src, "*")
    rows = _db_rows(pg_url)
    assert len(rows) == 40
    assert rows["ts"].min() == pd.Timestamp("2024-01-02 00:30", tz="UTC")


def test_invalid_rows_reject_their_series_only(db: Database, pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "insert into efsray.market_bars (symbol, timeframe, ts, open, high, low, close, volume)"
            " values ('GOOD', '1m', '2024-01-01', 10, 11, 9, 10, 5),"
            " ('BAD', '1m', '2024-01-01', 10, 9, 8, 10, 5),"  # high below open
            " ('BRK/B', '1m', '2024-01-01', 10, 11, 9, 10, 5)"  # cannot be a path
        )
    store = Store(tmp_path / "s")
    report = import_market_data(db, store)
    assert {r.symbol for r in report.rejected} == {"BAD", "BRK/B"}
    assert "high below" in next(r.error for r in report.rejected if r.symbol == "BAD")
    assert store.market.list_series() == [("GOOD", "1m")]
    with psycopg.connect(pg_url) as conn:  # fixed in the database: the next import takes it
        conn.execute("update efsray.market_bars set high = 12 where symbol = 'BAD'")
    assert import_market_data(db, store).rows_written == 1
    assert ("BAD", "1m") in store.market.list_series()


def test_sub_microsecond_timestamps_are_refused_on_export(db: Database, tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    frame = bars(3)
    frame["timestamp"] = frame["timestamp"] + pd.Timedelta(nanoseconds=1)
    store.market.write("NANO", "1m", frame)
    with pytest.raises(InvalidDataError, match="sub-microsecond"):
        export_market_data(db, store, "*")


SERIES, ROWS = 60, 3000


def _fill_database(url: str, series: int = SERIES, rows: int = ROWS) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(
            "insert into efsray.market_bars (symbol, timeframe, ts, open, high, low, close, volume)"
            " select 'S' || lpad(s::text, 3, '0'), '1m',"
            " timestamptz '2024-01-01' + i * interval '1 minute',"
            " 100 + i % 7, 108, 99, 100 + i % 5, i"
            f" from generate_series(1, {series}) s, generate_series(0, {rows - 1}) i"
        )


def _committed_series(root: Path) -> int:
    base = root / "market_data" / "ohlcv"
    return sum(1 for p in base.glob("*/1m/versions") if any(p.rglob("v*.json")))


def test_import_killed_midway_then_rerun_leaves_exactly_one_copy(
    db: Database, pg_url: str, tmp_path: Path
) -> None:
    _fill_database(pg_url)
    root = tmp_path / "store"
    Store(root)
    env = cli_env(pg_url, root)
    child = subprocess.Popen(
        [sys.executable, "-m", "efsray.cli.app", "sync", "--once", "--root", str(root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            "the import to commit its first series",
            lambda: _committed_series(root) >= 3 or child.poll() is not None,
            timeout=60,
            every=0.01,
            watch=[child],
        )
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL, "the import finished before it could be killed"
    done_before = _committed_series(root)
    assert 0 < done_before < SERIES
    assert not list((root / "market_data" / "sync").glob("neon-*.json"))  # watermark not moved

    rerun = efsray("sync", "--once", "--json", "--root", str(root), env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["bars_read_from_db"] == SERIES * ROWS
    assert summary["bars_imported"] == (SERIES - done_before) * ROWS

    store = Store(root)
    expected = _db_rows(pg_url)
    got = []
    for symbol, tf in store.market.list_series():
        assert store.market.info(symbol, tf).version == 1  # one commit per series, ever
        frame = store.market.read(symbol, tf).to_pandas()
        frame.insert(0, "timeframe", tf)
        frame.insert(0, "symbol", symbol)
        got.append(frame.rename(columns={"timestamp": "ts"}))
    pd.testing.assert_frame_equal(pd.concat(got, ignore_index=True), expected)
    assert (
        json.loads(efsray("sync", "--once", "--json", "--root", str(root), env=env).stdout)[
            "rows_moved"
        ]
        == 0
    )


_EXPORT_CHILD = """
import sys
from efsray.connector import Database, PoolConfig
from efsray.connector.market import export_market_data
from efsray.store import Store
with Database(PoolConfig(sys.argv[1])) as db:
    export_market_data(db, Store(sys.argv[2]), "*")
"""


def _exported(url: str) -> int:
    with psycopg.connect(url) as conn:
        return int(conn.execute("select count(*) from efsray.sync_state").fetchone()[0])


def test_export_killed_midway_then_rerun_leaves_exactly_one_copy(
    db: Database, pg_url: str, tmp_path: Path
) -> None:
    root = tmp_path / "store"
    store = Store(root)
    n_series = 40
    for k in range(n_series):
        store.market.write(f"E{k:03d}", "1m", bars(2000, seed=k))
    env = cli_env(pg_url, root)
    child = subprocess.Popen(
        [sys.executable, "-c", _EXPORT_CHILD, pg_url, str(root)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            "the export to commit its first series",
            lambda: _exported(pg_url) >= 2 or child.poll() is not None,
            timeout=60,
            every=0.01,
            watch=[child],
        )
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL, "the export finished before it could be killed"
    assert 0 < _exported(pg_url) < n_series

    report = export_market_data(db, store, "*")
    assert sum(1 for s in report.series if s.rows_read) == n_series - _exported_before(report)
    rows = _db_rows(pg_url)
    assert len(rows) == n_series * 2000
    assert not rows.duplicated(["symbol", "timeframe", "ts"]).any()
    for k in (0, n_series - 1):
        symbol = f"E{k:03d}"
        want = store.market.read(symbol, "1m").to_pandas()
        have = rows[rows.symbol == symbol].reset_index(drop=True)
        assert (have["close"].to_numpy() == want["close"].to_numpy()).all()
    assert export_market_data(db, store, "*").rows_changed == 0


def _exported_before(report: object) -> int:
    return sum(1 for s in report.series if not s.rows_read)  # type: ignore[attr-defined]


def test_import_of_chosen_symbols_keeps_its_own_watermark(db: Database, tmp_path: Path) -> None:
    src = Store(tmp_path / "src")
    src.market.write("AAA", "1m", bars(10))
    src.market.write("BBB", "1m", bars(10, seed=3))
    export_market_data(db, src, "*")
    dst = Store(tmp_path / "dst")
    assert import_market_data(db, dst, symbols=["AAA"]).rows_written == 10
    assert dst.market.list_series() == [("AAA", "1m")]
    assert import_market_data(db, dst).rows_written == 20 - 10  # AAA compares equal
    assert isinstance(dst.market.read("BBB", "1m"), pa.Table)


def test_a_stopped_import_keeps_its_watermark(db: Database, pg_url: str, tmp_path: Path) -> None:
    _fill_database(pg_url, series=6, rows=500)
    store = Store(tmp_path / "s")
    asked = []

    def stop_after_two() -> bool:
        asked.append(1)
        return len(asked) > 2

    first = import_market_data(db, store, should_stop=stop_after_two)
    assert len(first.series) == 2 and first.watermark_after == first.watermark_before == 0
    assert not list((tmp_path / "s" / "market_data" / "sync").glob("neon-*.json"))
    rest = import_market_data(db, store)
    assert rest.rows_written == (6 - 2) * 500 and rest.watermark_after > 0
    assert len(store.market.list_series()) == 6


def test_full_import_of_long_series_reads_them_one_by_one(
    db: Database, pg_url: str, tmp_path: Path
) -> None:
    # Long series (and a fresh store) take the per-series path; a name with a quote in it
    # must travel safely as an SQL literal and be rejected as a store name.
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "insert into efsray.market_bars (symbol, timeframe, ts, open, high, low, close, volume)"
            " select s, '1m', timestamptz '2024-01-01' + i * interval '1 minute',"
            " 100 + i % 7, 108, 99, 100 + i % 5, i"
            " from unnest(array['AAA', 'BBB', 'O''X']) s, generate_series(0, 24999) i"
        )
        conn.execute("analyze efsray.market_bars")
    with db.connection() as conn:
        plan = _plan_queries(conn, 0, "txid >= '0'::xid8", None)
        assert [tag for tag, _ in plan] == [("AAA", "1m"), ("BBB", "1m"), ("O'X", "1m")]
        assert len(_plan_queries(conn, 5, "txid >= '5'::xid8", None)) == 1  # incremental
    store = Store(tmp_path / "s")
    report = import_market_data(db, store)
    assert report.rows_read == 75_000 and report.rows_written == 50_000
    assert [(r.symbol, r.rows_read) for r in report.rejected] == [("O'X", 25_000)]
    expected = _db_rows(pg_url, "BBB")
    got = store.market.read("BBB", "1m").to_pandas()
    assert (got["timestamp"].to_numpy() == expected["ts"].to_numpy()).all()
    assert (got["close"].to_numpy() == expected["close"].to_numpy()).all()
    assert import_market_data(db, store).rows_written == 0
