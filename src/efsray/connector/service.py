"""``efsray sync``: the long-running bridge between the store and the database.

It migrates the schema at start, then runs a sync cycle every ``interval`` seconds. Its
health and last-sync figures are served as JSON over HTTP (``GET /health``; 200 while the
last attempt succeeded, 503 while failing) and in Prometheus' text format
(``GET /metrics``), bound to 127.0.0.1 unless told otherwise.
When the database goes away (a restart, a network cut) the cycle fails, the service
retries with exponential backoff (1 s doubling to 60 s, with jitter) and resumes where it
stopped: every step is idempotent and keeps its own watermark. ``stop()`` (SIGTERM in the
CLI) ends the loop after the current step, closes the pool and the HTTP server.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from efsray.connector.migrate import migrate
from efsray.connector.pool import Database
from efsray.connector.sync import Syncer, SyncReport
from efsray.errors import DatabaseError, EfsrayError
from efsray.httpd import ServiceHTTPServer

if TYPE_CHECKING:
    from efsray.store import Store

__all__ = ["Health", "ServiceConfig", "SyncService"]

log = logging.getLogger("efsray.connector")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """How the service runs. Durations in seconds."""

    interval: float = 60.0
    host: str = "127.0.0.1"
    port: int = 8765
    once: bool = False
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    migrate: bool = True

    def __post_init__(self) -> None:
        if not self.interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {self.interval!r}")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise ValueError("need 0 < backoff_initial <= backoff_max")


class Health:
    """The service's figures, updated by the loop and read by the HTTP handler."""

    def __init__(self, store: str, database: str, interval: float) -> None:
        self._lock = threading.Lock()
        self.store = store
        self.database = database
        self.interval = interval
        self.state = "starting"
        self.cycles = 0
        self.failures_total = 0
        self.consecutive_failures = 0
        self.database_up: bool | None = None
        self.last_error: str | None = None
        self.last_attempt_at: dt.datetime | None = None
        self.last_success_at: dt.datetime | None = None
        self.next_attempt_at: dt.datetime | None = None
        self.last_sync: dict[str, Any] | None = None
        self.totals: dict[str, int] = {}

    def set_state(self, state: str) -> None:
        with self._lock:
            self.state = state

    def success(self, report: SyncReport, next_in: float) -> None:
        now = dt.datetime.now(dt.UTC)
        summary = report.summary()
        with self._lock:
            self.state = "running"
            self.cycles += 1
            self.consecutive_failures = 0
            self.database_up = True
            self.last_error = None
            self.last_attempt_at = self.last_success_at = now
            self.next_attempt_at = now + dt.timedelta(seconds=next_in)
            self.last_sync = summary
            for key, value in summary.items():
                if isinstance(value, int) and key != "import_watermark":
                    self.totals[key] = self.totals.get(key, 0) + value

    def failure(self, exc: BaseException, next_in: float, *, database_down: bool) -> None:
        now = dt.datetime.now(dt.UTC)
        with self._lock:
            self.state = "retrying"
            self.failures_total += 1
            self.consecutive_failures += 1
            if database_down:
                self.database_up = False
            self.last_error = f"{type(exc).__name__}: {exc}"
            self.last_attempt_at = now
            self.next_attempt_at = now + dt.timedelta(seconds=next_in)

    @property
    def healthy(self) -> bool:
        with self._lock:
            return self.consecutive_failures == 0 and self.state != "stopped"

    def snapshot(self) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)

        def iso(when: dt.datetime | None) -> str | None:
            return when.isoformat() if when else None

        with self._lock:
            return {
                "status": self.state,
                "healthy": self.consecutive_failures == 0 and self.state != "stopped",
                "store": self.store,
                "database": self.database,
                "database_up": self.database_up,
                "interval_seconds": self.interval,
                "cycles": self.cycles,
                "failures_total": self.failures_total,
                "consecutive_failures": self.consecutive_failures,
                "last_error": self.last_error,
                "last_attempt_at": iso(self.last_attempt_at),
                "last_success_at": iso(self.last_success_at),
                "next_attempt_at": iso(self.next_attempt_at),
                "lag_seconds": round((now - self.last_success_at).total_seconds(), 3)
                if self.last_success_at
                else None,
                "last_sync": self.last_sync,
                "totals": dict(self.totals),
            }


class _Collector:
    """Prometheus view of a :class:`Health` (read at scrape time; no global registry)."""

    def __init__(self, health: Health) -> None:
        self.health = health

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.health.snapshot()

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=float("nan") if value is None else value)

        yield gauge("efsray_sync_up", "1 while the last sync attempt succeeded", snap["healthy"])
        up = snap["database_up"]
        yield gauge("efsray_sync_database_up", "1 if the database answered last time", up)
        yield CounterMetricFamily("efsray_sync_cycles", "Successful sync cycles", snap["cycles"])
        yield CounterMetricFamily(
            "efsray_sync_failures", "Failed sync attempts", snap["failures_total"]
        )
        yield gauge(
            "efsray_sync_consecutive_failures",
            "Failed attempts since the last success",
            snap["consecutive_failures"],
        )
        yield gauge(
            "efsray_sync_lag_seconds", "Seconds since the last success", snap["lag_seconds"]
        )
        last = self.health.last_success_at
        yield gauge(
            "efsray_sync_last_success_timestamp_seconds",
            "Unix time of the last successful cycle",
            last.timestamp() if last else None,
        )
        seconds = (snap["last_sync"] or {}).get("seconds")
        yield gauge("efsray_sync_last_cycle_seconds", "Duration of the last cycle", seconds)
        rows = CounterMetricFamily(
            "efsray_sync_rows", "Rows moved by the sync since start", labels=["kind"]
        )
        for kind, value in sorted(snap["totals"].items()):
            if kind not in ("rows_moved", "seconds"):
                rows.add_metric([kind], value)
        yield rows


def _registry(health: Health) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(health))
    return registry


def _health_fn(health: Health) -> Callable[[], tuple[int, dict[str, Any]]]:
    def answer() -> tuple[int, dict[str, Any]]:
        return (200 if health.healthy else 503), health.snapshot()

    return answer


class SyncService:
    """The sync loop plus its health endpoint.

    ``make_db`` opens the database (called again after a failed open); ``make_syncer``
    builds the :class:`Syncer` for an open database.
    """

    def __init__(
        self,
        make_db: Callable[[], Database],
        store: Store,
        config: ServiceConfig,
        *,
        make_syncer: Callable[[Database], Syncer],
        database_label: str,
        rng: random.Random | None = None,
    ) -> None:
        self.make_db = make_db
        self.store = store
        self.config = config
        self.make_syncer = make_syncer
        self.health = Health(str(store.root), database_label, config.interval)
        self._stop = threading.Event()
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._server: ServiceHTTPServer | None = None

    # --- HTTP -----------------------------------------------------------------------------------

    def start_http(self) -> tuple[str, int]:
        """Bind the health endpoint (port 0: any free port); returns (host, port)."""
        server = ServiceHTTPServer(
            _registry(self.health),
            _health_fn(self.health),
            host=self.config.host,
            port=self.config.port,
            name="efsray sync",
        )
        self._server = server.start()
        return self.config.host, server.port

    # --- loop -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to end after its current step (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def _backoff(self, failures: int) -> float:
        base = min(self.config.backoff_max, self.config.backoff_initial * 2 ** (failures - 1))
        return base * (0.5 + 0.5 * self._rng.random())

    def _open(self) -> tuple[Database, Syncer]:
        db = self.make_db()
        try:
            if self.config.migrate:
                with db.connection() as conn:
                    report = migrate(conn)
                if report.applied:
                    log.info("applied migrations %s", report.applied)
            return db, self.make_syncer(db)
        except BaseException:
            db.close()
            raise

    def run(self) -> SyncReport | None:
        """Run until ``stop()`` (or one successful cycle with ``once``; with ``once`` a
        failure raises). Returns the last report."""
        db: Database | None = None
        syncer: Syncer | None = None
        last: SyncReport | None = None
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    if db is None or syncer is None:
                        db, syncer = self._open()
                    last = syncer.run_once(should_stop=self._stop.is_set)
                    failures = 0
                    self.health.success(last, self.config.interval)
                    if self.config.once:
                        break
                    wait = self.config.interval
                except (EfsrayError, OSError) as exc:
                    if self.config.once:
                        raise
                    failures += 1
                    wait = self._backoff(failures)
                    down = isinstance(exc, DatabaseError)
                    self.health.failure(exc, wait, database_down=down)
                    if down and db is not None:
                        # Reconnect from scratch: the next open probes the server directly
                        # and fails fast while it is away, instead of waiting on the pool.
                        db.close()
                        db = syncer = None
                    log.warning(
                        "sync failed (%d in a row), retrying in %.1f s: %s", failures, wait, exc
                    )
                self._stop.wait(wait)
        finally:
            self.health.set_state("stopped")
            if db is not None:
                db.close()
        return last

    def close(self) -> None:
        """Stop the HTTP server."""
        if self._server is not None:
            self._server.stop()
            self._server = None
