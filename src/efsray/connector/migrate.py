"""Schema migrations: versioned SQL files applied in order, once, under a lock.

Migrations are the ``NNNN_name.sql`` files of :mod:`efsray.connector.migrations` (package
data). ``migrate`` runs in one transaction holding an advisory lock, so several services
starting at once apply each migration exactly once, and a failing migration leaves the
database as it was. Each applied migration is recorded in ``efsray.schema_migrations`` with
the SHA-256 of its text; a released file that was edited afterwards is refused rather than
silently skipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from efsray.errors import DatabaseError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "MIGRATIONS_TABLE",
    "Migration",
    "MigrationReport",
    "MigrationState",
    "load_migrations",
    "migrate",
    "migration_status",
]

log = logging.getLogger("efsray.connector")

MIGRATIONS_TABLE = "efsray.schema_migrations"
# pg_advisory_xact_lock key: the bytes "efsrayMg" as a signed 64-bit integer.
_LOCK_KEY = int.from_bytes(b"efsrayMg", "big", signed=True)
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_BOOTSTRAP = f"""
CREATE SCHEMA IF NOT EXISTS efsray;
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL DEFAULT current_user
);
"""
_RECORD = f"INSERT INTO {MIGRATIONS_TABLE} (version, name, checksum) VALUES (%s, %s, %s)"  # noqa: S608


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str = ""

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationState:
    """A migration as the database sees it: applied, pending, changed or unknown."""

    version: int
    name: str
    state: str
    applied_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """What ``migrate`` did."""

    applied: tuple[int, ...]
    already_applied: tuple[int, ...]
    current_version: int


def load_migrations(package: str = "efsray.connector.migrations") -> list[Migration]:
    """The migration files of ``package``, in version order; gaps and duplicates refused."""
    found = []
    for entry in resources.files(package).iterdir():
        m = _FILE.match(entry.name)
        if m is None:
            continue
        found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    for expected, mig in enumerate(found, start=1):
        if mig.version != expected:
            raise DatabaseError(
                f"migrations in {package} are not numbered 0001, 0002, ... without gaps: "
                f"found {mig.version:04d}_{mig.name}.sql where {expected:04d} was expected"
            )
    return found


def _applied(conn: psycopg.Connection[Any]) -> dict[int, tuple[str, str, dt.datetime]]:
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (MIGRATIONS_TABLE,)).fetchone()
    if not exists or not exists[0]:
        return {}
    query = f"SELECT version, name, checksum, applied_at FROM {MIGRATIONS_TABLE}"  # noqa: S608
    rows = conn.execute(query)
    return {int(v): (str(n), str(c), a) for v, n, c, a in rows.fetchall()}


def _check_unchanged(
    migrations: Sequence[Migration], applied: dict[int, tuple[str, str, dt.datetime]]
) -> None:
    for mig in migrations:
        if mig.version in applied and applied[mig.version][1] != mig.checksum:
            raise DatabaseError(
                f"migration {mig.version:04d}_{mig.name}.sql differs from the one applied to "
                f"this database on {applied[mig.version][2]:%Y-%m-%d}; released migrations must "
                "never change: restore the file and add the change as a new migration"
            )


def migrate(
    conn: psycopg.Connection[Any], migrations: Sequence[Migration] | None = None
) -> MigrationReport:
    """Apply every pending migration in order, in one transaction under an advisory lock.

    Idempotent: a second run applies nothing. If any migration fails, none of this run's
    are kept, and the error names the file.
    """
    import psycopg

    migrations = load_migrations() if migrations is None else list(migrations)
    done: list[int] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(_BOOTSTRAP)
            applied = _applied(conn)
            _check_unchanged(migrations, applied)
            for mig in migrations:
                if mig.version in applied:
                    continue
                try:
                    conn.execute(mig.sql)  # no parameters: several statements are allowed
                except psycopg.Error as exc:
                    raise DatabaseError(
                        f"migration {mig.version:04d}_{mig.name}.sql failed: "
                        f"{' '.join(str(exc).split())}; nothing of this run was applied"
                    ) from exc
                conn.execute(_RECORD, (mig.version, mig.name, mig.checksum))
                done.append(mig.version)
                log.info("applied migration %04d_%s", mig.version, mig.name)
    except psycopg.Error as exc:
        raise DatabaseError(f"migrating the database failed: {' '.join(str(exc).split())}") from exc
    known = {m.version for m in migrations}
    unknown = sorted(set(applied) - known)
    if unknown:
        log.warning(
            "the database has migrations this efsray does not know (%s): a newer efsray "
            "migrated it",
            ", ".join(f"{v:04d}" for v in unknown),
        )
    every = set(applied) | set(done)
    return MigrationReport(
        applied=tuple(done),
        already_applied=tuple(sorted(v for v in applied if v in known)),
        current_version=max(every, default=0),
    )


def migration_status(
    conn: psycopg.Connection[Any], migrations: Sequence[Migration] | None = None
) -> list[MigrationState]:
    """Every known and applied migration with its state; changes nothing."""
    migrations = load_migrations() if migrations is None else list(migrations)
    applied = _applied(conn)
    out = []
    for mig in migrations:
        hit = applied.get(mig.version)
        if hit is None:
            out.append(MigrationState(mig.version, mig.name, "pending", None))
        else:
            state = "applied" if hit[1] == mig.checksum else "changed"
            out.append(MigrationState(mig.version, mig.name, state, hit[2]))
    known = {m.version for m in migrations}
    for version in sorted(set(applied) - known):
        name, _, when = applied[version]
        out.append(MigrationState(version, name, "unknown", when))
    return out
