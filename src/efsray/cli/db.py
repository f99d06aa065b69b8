"""``efsray db migrate`` and ``efsray db status``: the database schema."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from efsray.cli._common import EnvFileOpt, JsonOpt, console, print_json, settings_from

db_app = typer.Typer(
    help="The Neon (PostgreSQL) database: schema migrations and status.",
    no_args_is_help=True,
)


def _open(env_file: object) -> object:
    from efsray.connector import Database, PoolConfig

    settings = settings_from(env_file)  # type: ignore[arg-type]
    return Database(PoolConfig.from_settings(settings, min_size=0, max_size=1))


@db_app.command("migrate")
def migrate_cmd(env_file: EnvFileOpt = None, json_out: JsonOpt = False) -> None:
    """Apply pending schema migrations (idempotent; safe to run from several hosts)."""
    from efsray.connector import Database, migrate

    db = _open(env_file)
    assert isinstance(db, Database)
    with db, db.connection() as conn:
        report = migrate(conn)
    if json_out:
        print_json({"database": db.masked, **_asdict(report)})
        return
    if report.applied:
        console.print(
            f"applied {len(report.applied)} migration(s): "
            + ", ".join(f"{v:04d}" for v in report.applied)
            + f"; schema version {report.current_version}"
        )
    else:
        console.print(f"schema is up to date (version {report.current_version})")


@db_app.command("status")
def status_cmd(env_file: EnvFileOpt = None, json_out: JsonOpt = False) -> None:
    """Show the server, the connection settings (password hidden) and the migrations."""
    from efsray.connector import Database, migration_status

    db = _open(env_file)
    assert isinstance(db, Database)
    with db:
        info = db.probe()
        with db.connection() as conn:
            states = migration_status(conn)
    cfg = db.config
    out = {
        "database": db.masked,
        "server": _asdict(info),
        "pool": {
            "min_size": settings_from(env_file).neon_pool_min_size,
            "max_size": settings_from(env_file).neon_pool_max_size,
            "connect_timeout": cfg.connect_timeout,
            "pool_timeout": cfg.pool_timeout,
            "statement_timeout": cfg.statement_timeout,
            "application_name": cfg.application_name,
        },
        "migrations": [_asdict(s) for s in states],
        "pending": [s.version for s in states if s.state == "pending"],
    }
    if json_out:
        print_json(out)
        return
    console.print(f"database  {escape(db.masked)}")
    console.print(
        f"server    PostgreSQL {escape(info.server_version)}, db {escape(info.database)}, "
        f"user {escape(info.user)}, TLS {'on' if info.ssl else 'off'}, {info.latency_ms:.1f} ms"
    )
    table = Table("version", "name", "state", "applied at")
    for s in states:
        table.add_row(f"{s.version:04d}", s.name, s.state, str(s.applied_at or "-"))
    console.print(table)
    if out["pending"]:
        console.print("run `efsray db migrate` to apply the pending migrations")


def _asdict(value: object) -> dict[str, object]:
    from efsray.cli._common import to_jsonable

    result = to_jsonable(value)
    assert isinstance(result, dict)
    return result


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
