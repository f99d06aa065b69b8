"""The pool: settings, TLS default, and clear errors that never show the password."""

from __future__ import annotations

import threading
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.config import load_settings
from efsray.connector import Database, PoolConfig, build_conninfo, scrub
from efsray.errors import ConfigError, DatabaseError
from tests.connector.conftest import cli_env, efsray
from tests.fixtures.postgres import PgTarget, free_port

pytestmark = pytest.mark.postgres

SECRET = "Sup3r-s3cret-pw"


def test_sslmode_require_is_added_unless_the_url_says_otherwise() -> None:
    from psycopg.conninfo import conninfo_to_dict

    got = conninfo_to_dict(build_conninfo("postgresql://u:p@db.example.com/neondb"))
    assert got["sslmode"] == "require"
    assert got["application_name"] == "efsray"
    got = conninfo_to_dict(
        build_conninfo(
            "postgresql://u:p@localhost/x?sslmode=disable&application_name=mine",
            application_name="efsray",
        )
    )
    assert got["sslmode"] == "disable"
    assert got["application_name"] == "mine"


def test_pool_config_from_settings_and_missing_url() -> None:
    with pytest.raises(ConfigError, match="NEON_CONNECTION_STRING is not set"):
        PoolConfig.from_settings(load_settings())
    s = load_settings(
        neon_connection_string=f"postgresql://alice:{SECRET}@db/x",
        neon_pool_min_size=2,
        neon_pool_max_size=7,
        neon_application_name="sync-a",
    )
    cfg = PoolConfig.from_settings(s)
    assert (cfg.min_size, cfg.max_size, cfg.application_name) == (2, 7, "sync-a")
    assert SECRET not in repr(cfg)
    assert "alice:***@db" in cfg.masked


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://alice:{SECRET}%zz@db.example.com/neondb",  # bad percent escape
        f"postgresql://alice:{SECRET}@db.example.com:port/neondb",  # port not a number
        f"postgresql://alice:{SECRET}@db.example.com/neondb?bogus=1",  # unknown parameter
        f"host=db user=alice password={SECRET} sslmode",  # key without value
    ],
)
def test_malformed_url_is_a_clear_error_without_the_password(url: str) -> None:
    with pytest.raises(DatabaseError) as err:
        Database(PoolConfig(url))
    message = str(err.value)
    assert SECRET not in message
    assert "***" in message or "password" not in url
    assert "postgresql://" in message or "is not valid" in message or "malformed" in message


@settings(max_examples=200, deadline=None)
@given(
    password=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="@/'\\"),
        min_size=4,
        max_size=30,
    ),
    noise=st.text(max_size=40),
)
def test_scrub_never_leaves_the_password(password: str, noise: str) -> None:
    for dsn in (
        f"postgresql://bob:{password}@h/db",
        f"postgresql://bob:{quote(password, safe='')}@h/db",
        f"host=h user=bob password={password}",
    ):
        message = f'{noise} token: "{password}" in {dsn} {noise}'
        assert password not in scrub(message, dsn)


def test_refused_connection_names_it_and_hides_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://alice:{SECRET}@127.0.0.1:{port}/db?sslmode=disable"
    with pytest.raises(DatabaseError, match="refused") as err:
        Database(PoolConfig(url, connect_timeout=3))
    assert SECRET not in str(err.value)
    assert f"alice:***@127.0.0.1:{port}" in str(err.value)


def test_wrong_password(pg_target: PgTarget, pg_database: str) -> None:
    url = pg_target.url(pg_database, password=SECRET)
    with pytest.raises(DatabaseError, match="rejected the user name or password") as err:
        Database(PoolConfig(url))
    assert SECRET not in str(err.value)


def test_unknown_database(pg_target: PgTarget) -> None:
    with pytest.raises(DatabaseError, match="database does not exist"):
        Database(PoolConfig(pg_target.url("no_such_db_here")))


def test_tls_required_by_default_against_a_server_without_tls(pg_target: PgTarget) -> None:
    if pg_target.server is None:
        pytest.skip("the external test server may well have TLS")
    url = pg_target.url("postgres").replace("?sslmode=disable", "")
    with pytest.raises(DatabaseError, match="sslmode=disable"):
        Database(PoolConfig(url))


def test_probe_and_pool(pg_url: str) -> None:
    with Database(PoolConfig(pg_url, application_name="efsray-test")) as db:
        info = db.probe()
        assert info.server_version and info.ssl is False
        with db.connection() as conn:
            row = conn.execute("select current_setting('application_name')").fetchone()
        assert row == ("efsray-test",)
        assert SECRET not in repr(db)


def test_exhausted_pool_is_named(pg_url: str) -> None:
    with Database(PoolConfig(pg_url, min_size=1, max_size=1, pool_timeout=0.5)) as db:
        held = threading.Event()
        release = threading.Event()

        def hold() -> None:
            with db.connection():
                held.set()
                release.wait(30)

        t = threading.Thread(target=hold)
        t.start()
        try:
            assert held.wait(30)
            with pytest.raises(DatabaseError, match="pool exhausted: all 1 connections"):  # noqa: SIM117
                with db.connection():
                    pass
        finally:
            release.set()
            t.join(30)
        with db.connection() as conn:  # free again
            assert conn.execute("select 1").fetchone() == (1,)


def test_statement_errors_become_database_errors(pg_url: str) -> None:
    with Database(PoolConfig(pg_url, statement_timeout=0.2)) as db:
        with pytest.raises(DatabaseError, match="refused a statement"), db.connection() as c:
            c.execute("select * from no_such_table")
        with pytest.raises(DatabaseError), db.connection() as conn:
            conn.execute("select pg_sleep(5)")  # cut by statement_timeout


def test_cli_bad_password_is_one_masked_line(
    pg_target: PgTarget, pg_database: str, tmp_path: Path
) -> None:
    url = pg_target.url(pg_database, password=SECRET)
    proc = efsray("db", "status", env=cli_env(url, tmp_path / "store"))
    assert proc.returncode == 5, proc.stderr
    assert "Traceback" not in proc.stderr
    assert SECRET not in proc.stderr + proc.stdout
    assert "rejected the user name or password" in " ".join(proc.stderr.split())
