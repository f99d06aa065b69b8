"""Connections to Neon (PostgreSQL): a psycopg_pool pool built from settings, with errors
that say what went wrong and never show the password.

``PoolConfig`` is what a pool needs (built from :class:`~efsray.config.Settings` by
``PoolConfig.from_settings``); ``Database`` owns the pool. Opening a ``Database`` makes one
direct connection first, so a bad URL, a refused connection, an unknown host, a wrong
password or a missing database fails at once with a :class:`~efsray.errors.DatabaseError`
naming it, instead of as a pool timeout half a minute later. Later, when no pooled
connection can be had within ``pool_timeout``, a direct probe tells "pool exhausted" (all
``max_size`` connections busy) from "the server went away".

TLS: ``sslmode=require`` is added unless the connection string names an ``sslmode`` itself
(Neon needs TLS; a local test server says ``sslmode=disable`` in its URL).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from efsray.config import Settings, mask_dsn
from efsray.errors import ConfigError, DatabaseError

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

__all__ = ["Database", "PoolConfig", "ServerInfo", "build_conninfo", "explain_error", "scrub"]

log = logging.getLogger("efsray.connector")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """Everything a pool needs. ``dsn`` is secret: it is left out of ``repr``."""

    dsn: str = field(repr=False)
    min_size: int = 1
    max_size: int = 10
    connect_timeout: float = 10.0
    pool_timeout: float = 30.0
    statement_timeout: float = 0.0
    application_name: str = "efsray"

    def __post_init__(self) -> None:
        if not 0 <= self.min_size <= self.max_size or self.max_size < 1:
            raise ConfigError(
                f"pool sizes min={self.min_size}, max={self.max_size} are invalid; "
                "need 0 <= NEON_POOL_MIN_SIZE <= NEON_POOL_MAX_SIZE and max >= 1"
            )
        for name in ("connect_timeout", "pool_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> PoolConfig:
        """The pool described by NEON_* settings; ConfigError if no URL is set."""
        if settings.neon_connection_string is None:
            raise ConfigError(
                "NEON_CONNECTION_STRING is not set; set it to the Neon URL, e.g. "
                "postgresql://USER:PASSWORD@ep-xyz.us-east-1.aws.neon.tech/neondb"
            )
        values: dict[str, Any] = {
            "dsn": settings.neon_connection_string.get_secret_value(),
            "min_size": settings.neon_pool_min_size,
            "max_size": settings.neon_pool_max_size,
            "connect_timeout": settings.neon_connect_timeout,
            "pool_timeout": settings.neon_pool_timeout,
            "statement_timeout": settings.neon_statement_timeout,
            "application_name": settings.neon_application_name,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def masked(self) -> str:
        """The connection string with its password hidden: safe to print or log."""
        return mask_dsn(self.dsn)

    def conninfo(self) -> str:
        """The libpq connection string to use: the URL plus our defaults."""
        return build_conninfo(
            self.dsn,
            application_name=self.application_name,
            connect_timeout=self.connect_timeout,
        )

    def __repr__(self) -> str:
        return (
            f"PoolConfig({self.masked!r}, min_size={self.min_size}, max_size={self.max_size}, "
            f"connect_timeout={self.connect_timeout}, pool_timeout={self.pool_timeout})"
        )


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What a successful probe learned about the server."""

    server_version: str
    database: str
    user: str
    ssl: bool
    latency_ms: float


def build_conninfo(
    dsn: str, *, application_name: str = "efsray", connect_timeout: float = 10.0
) -> str:
    """``dsn`` (URL or key=value) with ``sslmode=require``, ``application_name`` and
    ``connect_timeout`` added unless it sets them itself. DatabaseError if it does not parse."""
    from psycopg import conninfo as ci

    try:
        params = ci.conninfo_to_dict(dsn)
    except Exception as exc:  # noqa: BLE001 - libpq reports parse errors as several types
        raise DatabaseError(
            f"the connection string {mask_dsn(dsn)} is not valid: {scrub(str(exc), dsn)}. "
            "Use postgresql://USER:PASSWORD@HOST[:PORT]/DB[?sslmode=require] and "
            "percent-encode special characters in the password (%40 for @, %2F for /)"
        ) from None
    extra: dict[str, Any] = {}
    if "sslmode" not in params:
        extra["sslmode"] = "require"
    if "application_name" not in params:
        extra["application_name"] = application_name
    if "connect_timeout" not in params:
        # libpq takes whole seconds and treats 1 as 2.
        extra["connect_timeout"] = max(2, math.ceil(connect_timeout))
    return ci.make_conninfo(dsn, **extra)


def _passwords(dsn: str) -> list[str]:
    """Every spelling of the password in ``dsn`` (raw and percent-decoded), longest first."""
    found: list[str] = []
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        userinfo, at, _ = rest.rpartition("@")
        if at and ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
        found += re.findall(r"(?i)[?&]password=([^&#]*)", dsn)
    else:
        for quoted, plain in re.findall(r"(?i)password\s*=\s*(?:'((?:[^'\\]|\\.)*)'|(\S+))", dsn):
            found.append(quoted or plain)
    spellings = set()
    for pw in found:
        if pw:
            spellings.add(pw)
            with contextlib.suppress(ValueError):
                spellings.add(unquote(pw, errors="strict"))
    return sorted((s for s in spellings if s), key=len, reverse=True)


def scrub(message: str, dsn: str) -> str:
    """``message`` with every occurrence of ``dsn``'s password (and the DSN) hidden.

    libpq quotes the offending token in some parse errors ('invalid percent-encoded
    token: "s3c%zzret"'), and that token can be the password."""
    message = message.replace(dsn, mask_dsn(dsn)).strip()
    for pw in _passwords(dsn):
        message = message.replace(pw, "***")
    return message


# (pattern in libpq's message, what happened, what to do)
_DIAGNOSES: tuple[tuple[str, str, str], ...] = (
    (
        r"password authentication failed|authentication failed",
        "the server rejected the user name or password",
        "check the user and password in NEON_CONNECTION_STRING (Neon console: Roles)",
    ),
    (
        r"no password supplied",
        "the server wants a password and the connection string has none",
        "put the password in the URL: postgresql://USER:PASSWORD@HOST/DB",
    ),
    (
        r"no pg_hba\.conf entry|not permitted to log in|is not permitted",
        "the server does not allow this user to connect from here",
        "allow this client in the server's access rules (pg_hba.conf, Neon IP allow list)",
    ),
    (
        r'database ".*" does not exist',
        "the database does not exist",
        "check the database name at the end of the URL (Neon console: Databases)",
    ),
    (
        r'role ".*" does not exist',
        "the user (role) does not exist",
        "check the user name in the URL (Neon console: Roles)",
    ),
    (
        r"connection refused",
        "the connection was refused: nothing listens at that host and port",
        "check the host and port, and that the server is running",
    ),
    (
        r"resolve host|could not translate host name|name or service not known",
        "the host name does not resolve",
        "check the host in the URL (Neon: ep-NAME.REGION.aws.neon.tech)",
    ),
    (
        r"timeout expired|timed out",
        "the server did not answer in time",
        "check the network path to the server (security groups, VPN) or raise NEON_CONNECT_TIMEOUT",
    ),
    (
        r"server does not support ssl",
        "the server does not support TLS, and sslmode=require is the default",
        "for a local server without TLS only, add ?sslmode=disable to the URL",
    ),
    (
        r"too many connections|remaining connection slots",
        "the server has no connection slots left",
        "lower NEON_POOL_MAX_SIZE here or in other clients, or use Neon's pooled endpoint",
    ),
    (
        r"the database system is (starting up|shutting down|in recovery)",
        "the server is starting up or shutting down",
        "retry in a moment",
    ),
    (
        r"server closed the connection|terminating connection|connection is lost|"
        r"consuming input failed|connection is closed|SSL SYSCALL",
        "the connection to the server was lost",
        "the server restarted or the network dropped; retry",
    ),
    (
        r"invalid (integer|sslmode|connection option|uri|percent)|missing \"=\"|"
        r"unterminated quoted string",
        "the connection string is malformed",
        "use postgresql://USER:PASSWORD@HOST[:PORT]/DB and percent-encode special "
        "characters in the password",
    ),
)


def explain_error(exc: BaseException, dsn: str, action: str = "connect to") -> DatabaseError:
    """A DatabaseError for ``exc`` saying what happened and what to do, password hidden."""
    raw = scrub(str(exc) or type(exc).__name__, dsn)
    for pattern, what, hint in _DIAGNOSES:
        if re.search(pattern, raw, re.IGNORECASE):
            return DatabaseError(
                f"cannot {action} PostgreSQL at {mask_dsn(dsn)}: {what}; {hint}. "
                f"(server said: {_one_line(raw)})"
            )
    return DatabaseError(f"cannot {action} PostgreSQL at {mask_dsn(dsn)}: {_one_line(raw)}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _configure(statement_timeout: float) -> Any:
    def configure(conn: psycopg.Connection[Any]) -> None:
        if statement_timeout > 0:
            conn.execute(f"SET statement_timeout = {int(statement_timeout * 1000)}")
            conn.commit()

    return configure


class Database:
    """A connection pool to one PostgreSQL database.

    >>> with Database(PoolConfig.from_settings(settings)) as db:   # doctest: +SKIP
    ...     with db.connection() as conn:
    ...         conn.execute("select 1")

    ``open=True`` (the default) probes the server and opens the pool; a bad URL, a refused
    connection or a wrong password raises DatabaseError right here.
    """

    def __init__(self, config: PoolConfig, *, open: bool = True) -> None:
        self.config = config
        self._conninfo = config.conninfo()  # raises DatabaseError for a malformed URL
        self._pool: ConnectionPool | None = None
        self._arrow: Any = None  # one reused ADBC connection for Arrow transfers
        self._arrow_lock = threading.Lock()
        if open:
            self.open()

    # --- lifecycle ----------------------------------------------------------------------------

    def open(self) -> None:
        """Probe the server (clear errors), then open the pool. Idempotent."""
        if self._pool is not None:
            return
        from psycopg_pool import ConnectionPool

        self.probe()
        pool: ConnectionPool = ConnectionPool(
            self._conninfo,
            min_size=self.config.min_size,
            max_size=self.config.max_size,
            timeout=self.config.pool_timeout,
            open=False,
            configure=_configure(self.config.statement_timeout),
            check=ConnectionPool.check_connection,
            reconnect_timeout=max(60.0, self.config.pool_timeout),
            name="efsray",
        )
        pool.open(wait=False)
        self._pool = pool

    def close(self) -> None:
        self._drop_arrow()
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> Database:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._pool is not None else "closed"
        return f"Database({self.config.masked!r}, {state})"

    # --- connections --------------------------------------------------------------------------

    @property
    def conninfo(self) -> str:
        """The full libpq connection string. Secret: never print it (use config.masked)."""
        return self._conninfo

    @property
    def masked(self) -> str:
        return self.config.masked

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A new connection outside the pool (for long COPYs, locks, probes)."""
        import psycopg

        try:
            return psycopg.connect(self._conninfo, autocommit=autocommit)
        except psycopg.Error as exc:
            raise explain_error(exc, self.config.dsn) from None

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for a block; its transaction commits at the end of the block
        (rolls back on error). psycopg errors come out as DatabaseError, password hidden."""
        import psycopg
        from psycopg_pool import PoolTimeout

        if self._pool is None:
            raise DatabaseError(f"the pool for {self.masked} is closed; open() it first")
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout:
            raise self._timeout_error() from None
        except psycopg.OperationalError as exc:
            raise explain_error(exc, self.config.dsn, "talk to") from None
        except psycopg.Error as exc:
            raise DatabaseError(
                f"PostgreSQL at {self.masked} refused a statement: "
                f"{_one_line(scrub(str(exc), self.config.dsn))}"
            ) from exc

    @contextlib.contextmanager
    def arrow_connection(self) -> Iterator[Any]:
        """An ADBC (Arrow) connection in autocommit mode, reused from call to call (opening
        one costs tens of milliseconds); dropped after any error, so the next call
        reconnects. One user at a time."""
        try:
            import adbc_driver_postgresql.dbapi as adbc
        except ImportError:  # pragma: no cover - the db extra installs it
            raise DatabaseError(
                "the Arrow transfer needs adbc-driver-postgresql: pip install 'efsray[db]'"
            ) from None
        with self._arrow_lock:
            if self._arrow is None:
                try:
                    self._arrow = adbc.connect(self._conninfo, autocommit=True)
                except adbc.Error as exc:
                    raise explain_error(exc, self.config.dsn) from None
            try:
                yield self._arrow
            except adbc.Error as exc:
                self._drop_arrow()
                raise explain_error(exc, self.config.dsn, "read from") from None
            except BaseException:
                self._drop_arrow()  # a half-read result would confuse the next user
                raise

    def _drop_arrow(self) -> None:
        conn, self._arrow = self._arrow, None
        if conn is not None:
            try:
                conn.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail any way
                log.debug("closing the Arrow connection failed: %s", exc)

    def _timeout_error(self) -> DatabaseError:
        stats = self.stats()
        busy = stats.get("pool_size", 0) - stats.get("pool_available", 0)
        try:
            self.probe()
        except DatabaseError as exc:
            return exc
        return DatabaseError(
            f"pool exhausted: all {self.config.max_size} connections to {self.masked} were in "
            f"use ({busy} busy, {stats.get('requests_waiting', 0)} waiting) for "
            f"{self.config.pool_timeout:g} s; raise NEON_POOL_MAX_SIZE or NEON_POOL_TIMEOUT, "
            "or find who holds connections (pg_stat_activity, application_name="
            f"{self.config.application_name!r})"
        )

    def probe(self) -> ServerInfo:
        """Connect directly once and ask the server who it is; DatabaseError if it cannot."""
        import psycopg

        start = time.perf_counter()
        try:
            with psycopg.connect(self._conninfo, autocommit=True) as conn:
                row = conn.execute(
                    "select current_setting('server_version'), current_database(), current_user"
                ).fetchone()
                ssl = bool(conn.pgconn.ssl_in_use)
        except psycopg.Error as exc:
            raise explain_error(exc, self.config.dsn) from None
        assert row is not None
        return ServerInfo(
            server_version=str(row[0]),
            database=str(row[1]),
            user=str(row[2]),
            ssl=ssl,
            latency_ms=round((time.perf_counter() - start) * 1000, 3),
        )

    def stats(self) -> dict[str, int]:
        """psycopg_pool's counters (pool_size, pool_available, requests_waiting, ...)."""
        return dict(self._pool.get_stats()) if self._pool is not None else {}
