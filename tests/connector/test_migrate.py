"""Schema migrations: from empty, re-applied, concurrent, changed, failing."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import psycopg
import pytest

from efsray.connector import (
    Database,
    Migration,
    PoolConfig,
    load_migrations,
    migrate,
    migration_status,
)
from efsray.errors import DatabaseError
from tests.connector.conftest import cli_env, efsray

pytestmark = pytest.mark.postgres

TABLES = {
    "market_bars",
    "backtest_runs",
    "checkpoints",
    "checkpoint_aliases",
    "sync_state",
    "instance",
    "schema_migrations",
}


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select table_name from information_schema.tables where table_schema = 'efsray'"
        ).fetchall()
    return {r[0] for r in rows}


def test_files_are_numbered_and_shipped() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert all(m.sql.strip() and len(m.checksum) == 64 for m in migrations)


def test_from_empty_then_reapplied(pg_url: str) -> None:
    assert _tables(pg_url) == set()
    with Database(PoolConfig(pg_url)) as db:
        with db.connection() as conn:
            first = migrate(conn)
        with db.connection() as conn:
            second = migrate(conn)
            states = migration_status(conn)
            instance = conn.execute("select count(*) from efsray.instance").fetchone()
    latest = load_migrations()[-1].version
    assert first.applied == tuple(range(1, latest + 1))
    assert second.applied == ()
    assert second.already_applied == first.applied
    assert first.current_version == second.current_version == latest
    assert [s.state for s in states] == ["applied"] * latest
    assert _tables(pg_url) >= TABLES
    assert instance == (1,)


def _migrate_in_child(url: str) -> tuple[int, ...]:
    with Database(PoolConfig(url, min_size=0, max_size=1)) as db, db.connection() as conn:
        return migrate(conn).applied


def test_concurrent_migrators_apply_each_migration_once(pg_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.map(_migrate_in_child, [pg_url] * 4)
    applied = [r for r in results if r]
    assert len(applied) == 1, results  # exactly one process applied them, the rest saw them
    with psycopg.connect(pg_url) as conn:
        count = conn.execute("select count(*) from efsray.schema_migrations").fetchone()
    assert count == (len(load_migrations()),)


def test_failing_migration_rolls_back_everything_of_the_run(pg_url: str) -> None:
    migs = [
        Migration(1, "ok", "CREATE TABLE efsray.t1 (x int);"),
        Migration(2, "broken", "CREATE TABLE efsray.t2 (x int); SELECT no_such_function();"),
    ]
    with Database(PoolConfig(pg_url)) as db:
        with pytest.raises(DatabaseError, match=r"0002_broken\.sql failed"), db.connection() as c:
            migrate(c, migs)
        with db.connection() as conn:
            assert conn.execute("select to_regclass('efsray.t1')").fetchone() == (None,)
            assert [s.state for s in migration_status(conn, migs)] == ["pending", "pending"]


def test_an_edited_migration_is_refused(pg_url: str) -> None:
    with Database(PoolConfig(pg_url)) as db:
        with db.connection() as conn:
            migrate(conn, [Migration(1, "one", "CREATE TABLE efsray.t1 (x int);")])
        edited = [Migration(1, "one", "CREATE TABLE efsray.t1 (x bigint);")]
        with (
            pytest.raises(DatabaseError, match="differs from the one applied"),
            db.connection() as c,
        ):
            migrate(c, edited)
        with db.connection() as conn:
            assert [s.state for s in migration_status(conn, edited)] == ["changed"]


def test_cli_migrate_and_status(pg_url: str, tmp_path: Path) -> None:
    env = cli_env(pg_url, tmp_path / "store")
    before = efsray("db", "status", "--json", env=env)
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["pending"] == [m.version for m in load_migrations()]
    done = efsray("db", "migrate", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["applied"] == [m.version for m in load_migrations()]
    assert "***" in report["database"] and "sslmode=disable" in report["database"]
    again = efsray("db", "migrate", env=env)
    assert again.returncode == 0 and "up to date" in again.stdout
    after = json.loads(efsray("db", "status", "--json", env=env).stdout)
    assert after["pending"] == []
    assert {m["state"] for m in after["migrations"]} == {"applied"}
