"""PostgreSQL <-> store benchmark: efsray's sync against plain ``psql \\copy``, in one run.

1,000,000 one-minute bars (4 symbols x 250,000) in ``efsray.market_bars`` of a throwaway
PostgreSQL 15 (the test fixture's server: the image's binaries, run as the postgres user,
on the same disk), or of the database named by EFSRAY_BENCH_DATABASE_URL.

- import: ``import_market_data`` into an empty store (Arrow transfer, validation, Arrow IPC
  segments, commit) vs ``psql \\copy (select ... order by ...) to FILE`` of the same rows;
- export: ``export_market_data`` of the same store into an empty table vs
  ``psql \\copy efsray.market_bars (...) from FILE``.

Runs alternate (efsray, psql, efsray, ...) so machine noise hits both; medians are reported
as rows/s and as the ratio efsray / psql. Goal for the import: >= 0.70.

    python bench/pg_import.py                  # full run (about a minute)
    python bench/pg_import.py --rows 200000    # quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import psycopg

from bench._common import median, timed, write_results
from efsray.connector import Database, PoolConfig, migrate
from efsray.connector.market import export_market_data, import_market_data
from efsray.store import Store

SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN")
COLUMNS = "symbol, timeframe, ts, open, high, low, close, volume"
GOAL_IMPORT = 0.70


def fill(url: str, rows: int) -> None:
    per = rows // len(SYMBOLS)
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE efsray.market_bars")
        conn.execute(
            f"INSERT INTO efsray.market_bars ({COLUMNS}) "
            "SELECT s.sym, '1m', timestamptz '2020-01-01' + i * interval '1 minute', "
            "100 + (i %% 97) * 0.01, 101 + (i %% 89) * 0.01, 99 - (i %% 83) * 0.01, "
            "100 + (i %% 79) * 0.01, (i * 7) %% 1000 "
            "FROM unnest(%s::text[]) AS s(sym), generate_series(0, %s) AS i",
            (list(SYMBOLS), per - 1),
        )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE efsray.market_bars")


def psql(url: str, command: str) -> None:
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c", command],
        check=True,
        capture_output=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("psql") is None:
        print("psql is not installed (Debian package postgresql-client)", file=sys.stderr)
        return 2

    server = None
    external = os.environ.get("EFSRAY_BENCH_DATABASE_URL")
    if external:
        url = external
    else:
        from tests.fixtures.postgres import PgTarget, PostgresServer, unavailable_reason

        reason = unavailable_reason()
        if reason:
            print(f"cannot start PostgreSQL: {reason}", file=sys.stderr)
            return 2
        server = PostgresServer()
        server.start()
        target = PgTarget(server, None)
        url = target.url(target.create_database())
    work = Path(tempfile.mkdtemp(prefix="efsray-bench-pg-", dir=Path(__file__).parent))
    try:
        return run(url, work, args.rows, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if server is not None:
            server.cleanup()


def run(url: str, work: Path, rows: int, repeat: int) -> int:
    db = Database(PoolConfig(url, min_size=1, max_size=2))
    with db.connection() as conn:
        migrate(conn)
    fill(url, rows)
    select = f"SELECT {COLUMNS} FROM efsray.market_bars ORDER BY symbol, timeframe, ts"
    dump = work / "bars.copy"
    times: dict[str, list[float]] = {"import": [], "psql_to": [], "export": [], "psql_from": []}
    imported = 0
    store_root = work / "store"
    # One uncounted round first: a long-running service loads its libraries once.
    for k in range(-1, repeat):
        shutil.rmtree(store_root, ignore_errors=True)
        store = Store(store_root)
        seconds, report = timed(lambda store=store: import_market_data(db, store))
        imported = report.rows_written
        assert imported == rows - rows % len(SYMBOLS), report
        dump.unlink(missing_ok=True)
        psql_seconds, _ = timed(lambda: psql(url, f"\\copy ({select}) to '{dump}'"))
        if k < 0:
            continue
        times["import"].append(seconds)
        times["psql_to"].append(psql_seconds)
        seconds = psql_seconds
        print(f"[{k}] import {times['import'][-1]:.3f} s, psql to {seconds:.3f} s", flush=True)

    # Export: the same bars from the store into an empty table, vs psql \copy from the dump.
    store = Store(store_root)
    for k in range(repeat):
        with psycopg.connect(url) as conn:
            conn.execute("TRUNCATE efsray.market_bars, efsray.sync_state")
        seconds, report = timed(lambda store=store: export_market_data(db, store, "*"))
        assert report.rows_changed == imported, report
        times["export"].append(seconds)
        with psycopg.connect(url) as conn:
            conn.execute("TRUNCATE efsray.market_bars")
        seconds, _ = timed(
            lambda: psql(url, f"\\copy efsray.market_bars ({COLUMNS}) from '{dump}'")
        )
        times["psql_from"].append(seconds)
        print(f"[{k}] export {times['export'][-1]:.3f} s, psql from {seconds:.3f} s", flush=True)
    db.close()

    med = {name: median(values) for name, values in times.items()}
    rate = {name: imported / value for name, value in med.items()}
    ratio_import = rate["import"] / rate["psql_to"]
    ratio_export = rate["export"] / rate["psql_from"]
    payload: dict[str, Any] = {
        "rows": imported,
        "series": len(SYMBOLS),
        "repeat": repeat,
        "seconds": times,
        "median_seconds": med,
        "rows_per_second": rate,
        "ratios": {
            "import_vs_psql_copy_to": ratio_import,
            "export_vs_psql_copy_from": ratio_export,
        },
        "goals": {
            "import_vs_psql_copy_to": {"goal": GOAL_IMPORT, "met": ratio_import >= GOAL_IMPORT}
        },
        "server": "local PostgreSQL 15 (test fixture)"
        if "EFSRAY_BENCH_DATABASE_URL" not in os.environ
        else "external",
    }
    goal = "met" if ratio_import >= GOAL_IMPORT else "NOT met"
    md = "\n".join(
        [
            "# PostgreSQL <-> store benchmark",
            "",
            f"{imported:,} one-minute bars ({len(SYMBOLS)} symbols), local PostgreSQL on the "
            f"same machine, {repeat} alternating runs after a warm-up round, medians "
            "(`python bench/pg_import.py`).",
            "",
            "| direction | efsray (rows/s) | psql \\copy (rows/s) | efsray / psql |",
            "|---|---:|---:|---:|",
            f"| database -> store (import) | {rate['import']:,.0f} | "
            f"{rate['psql_to']:,.0f} (to a file) | {ratio_import:.2f} |",
            f"| store -> database (export) | {rate['export']:,.0f} | "
            f"{rate['psql_from']:,.0f} (from a file) | {ratio_export:.2f} |",
            "",
            f"Import goal: >= {GOAL_IMPORT:.2f} of psql's rows/s: {goal}.",
            "",
            "efsray's import validates every bar, compares with what the store holds, writes",
            "segments and commits a version per series; psql writes text to a file.",
            "efsray's export reads the store and COPYs binary rows into the table (the",
            "empty-table fast path); psql parses text.",
        ]
    )
    write_results("pg_import", payload, md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
