"""The Neon (PostgreSQL) connector: a connection pool, schema migrations, and sync between
the store on EFS and the database.

psycopg and psycopg_pool are imported only when a connection is made (extra ``db``).
"""

from efsray.connector.migrate import (
    Migration,
    MigrationReport,
    MigrationState,
    load_migrations,
    migrate,
    migration_status,
)
from efsray.connector.pool import (
    Database,
    PoolConfig,
    ServerInfo,
    build_conninfo,
    explain_error,
    scrub,
)

__all__ = [
    "Database",
    "Migration",
    "MigrationReport",
    "MigrationState",
    "PoolConfig",
    "ServerInfo",
    "build_conninfo",
    "explain_error",
    "load_migrations",
    "migrate",
    "migration_status",
    "scrub",
]
