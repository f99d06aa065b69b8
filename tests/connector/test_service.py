"""`efsray sync`: health endpoint, a database restart during the loop, SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from efsray.connector import Database, PoolConfig, migrate
from efsray.store import Store
from tests._wait import wait_for
from tests.connector.conftest import bars, cli_env, efsray
from tests.fixtures.postgres import PgTarget, PostgresServer

pytestmark = pytest.mark.postgres


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


class _Service:
    """`efsray sync` in a child process, its stdout read by a thread."""

    def __init__(self, url: str, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "efsray.cli.app",
                "sync",
                "--port",
                "0",
                "--root",
                str(root),
                *args,
            ],
            env=cli_env(url, root, NEON_POOL_TIMEOUT="3", NEON_CONNECT_TIMEOUT="3"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.port_found = threading.Event()
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "health on http://" in line:
                self.port = int(line.rsplit(":", 1)[1].split("/")[0])
                self.port_found.set()

    def wait_port(self) -> int:
        if not self.port_found.wait(60):
            self.proc.kill()
            pytest.fail(f"no health port announced; stderr: {self.proc.communicate()[1]}")
        return self.port

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def service_factory() -> Iterator[Any]:
    started: list[_Service] = []

    def make(url: str, root: Path, *args: str) -> _Service:
        svc = _Service(url, root, *args)
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()


def test_once_reports_and_exits(pg_url: str, tmp_path: Path) -> None:
    root = tmp_path / "store"
    Store(root).market.write("AAPL", "1m", bars(50))
    proc = efsray("sync", "--once", "--export", "AAPL", "--json", env=cli_env(pg_url, root))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["bars_exported"] == 50
    assert summary["bars_imported"] == 0  # they came from this store and compare equal


def test_once_with_the_database_down_fails_clearly(tmp_path: Path) -> None:
    from tests.fixtures.postgres import free_port

    url = f"postgresql://u:VeryS3cret@127.0.0.1:{free_port()}/db?sslmode=disable"
    proc = efsray("sync", "--once", env=cli_env(url, tmp_path / "store"))
    assert proc.returncode == 5
    assert "refused" in proc.stderr and "VeryS3cret" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_database_restart_during_the_loop_then_sigterm(
    pg_server: PostgresServer,
    pg_target: PgTarget,
    pg_url: str,
    tmp_path: Path,
    service_factory: Any,
) -> None:
    root = tmp_path / "store"
    Store(root)
    with Database(PoolConfig(pg_url)) as db, db.connection() as conn:
        migrate(conn)
    svc = service_factory(pg_url, root, "--interval", "0.2")
    port = svc.wait_port()
    status, first = wait_for(
        "a first sync cycle",
        lambda: (h := _health(port)) and h[1]["cycles"] >= 1 and h,
        timeout=60,
        watch=[svc.proc],
    )
    assert status == 200 and first["healthy"] and first["database_up"] is True
    assert "***" in first["database"] and pg_server.password not in json.dumps(first)

    pg_server.stop()  # the database goes away under the running service
    try:
        status, down = wait_for(
            "the service to notice the database is gone",
            lambda: (h := _health(port)) and h[1]["consecutive_failures"] >= 2 and h,
            timeout=60,
            watch=[svc.proc],
        )
        assert status == 503 and down["healthy"] is False and down["database_up"] is False
        assert "refused" in down["last_error"] or "lost" in down["last_error"]
        assert svc.proc.poll() is None  # still running, retrying
    finally:
        pg_server.start()

    with psycopg.connect(pg_url) as conn:  # new data while it was away
        conn.execute(
            "insert into efsray.market_bars (symbol, timeframe, ts, open, high, low, close,"
            " volume) values ('BACK', '1m', '2024-01-01', 1, 2, 0.5, 1.5, 10)"
        )
    store = Store(root)
    wait_for(
        "the service to reconnect and import",
        lambda: ("BACK", "1m") in store.market.list_series(),
        timeout=120,
        watch=[svc.proc],
    )
    status, up = wait_for(
        "healthy again",
        lambda: (h := _health(port)) and h[0] == 200 and h,
        timeout=60,
        watch=[svc.proc],
    )
    assert up["consecutive_failures"] == 0 and up["failures_total"] >= 2
    assert up["totals"]["bars_imported"] >= 1 and up["lag_seconds"] is not None

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        metrics = resp.read().decode()
    assert "efsray_sync_up 1.0" in metrics
    assert 'efsray_sync_rows_total{kind="bars_imported"}' in metrics
    assert "efsray_sync_failures_total" in metrics

    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(60) == 0
    svc._reader.join(10)
    assert any("stopped" in line for line in svc.lines)
    assert "Traceback" not in (svc.proc.stderr.read() if svc.proc.stderr else "")


def test_health_binds_localhost_by_default(
    pg_url: str, tmp_path: Path, service_factory: Any
) -> None:
    svc = service_factory(pg_url, tmp_path / "store", "--interval", "30")
    svc.wait_port()
    assert any("http://127.0.0.1:" in line for line in svc.lines)
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(60) == 0
