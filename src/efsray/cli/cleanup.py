"""``efsray cleanup``: retention over the whole store."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from efsray.cli._common import EnvFileOpt, JsonOpt, RootOpt, console, print_json, store_root

ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Accept a --grace below the safe minimum (600 s): only when no writer or "
        "reader is running.",
    ),
]
"""``--force`` of the commands that take ``--grace`` (cleanup, checkpoints prune)."""


def register(app: typer.Typer) -> None:
    app.command("cleanup")(cleanup_cmd)


def cleanup_cmd(
    days: Annotated[
        float,
        typer.Option(
            "--days", help="Remove what is older than this many days (0-36500).", min=0, max=36500
        ),
    ] = 7,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            help="Seconds a reader or an unfinished writer is given: nothing younger goes.",
            min=0,
            max=3650 * 86400,
        ),
    ] = 3600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Change nothing; report.")] = False,
    force: ForceOpt = False,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove old market-data versions and unreferenced segments, checkpoints beyond each
    model's retention policy, old backtest runs and logs, and crashed writers' temporary
    files. Never the latest version of anything, an aliased or kept checkpoint, or anything
    younger than --grace."""
    from efsray.store import Store
    from efsray.store.checkpoints import require_safe_grace

    require_safe_grace(grace, force=force, dry_run=dry_run)
    store = Store(store_root(root, env_file), create=False)
    report = store.cleanup(days, grace=grace, dry_run=dry_run)
    if json_out:
        print_json(
            {
                "dry_run": report.dry_run,
                "days": report.days,
                "cutoff": report.cutoff,
                "grace_seconds": report.grace_seconds,
                "files": report.files,
                "bytes": report.bytes,
                "areas": report.areas,
                "errors": list(report.errors),
            }
        )
    else:
        table = Table("area", "files", "bytes")
        for area, stats in report.areas.items():
            table.add_row(area, str(stats.files), str(stats.bytes))
        table.add_row("[bold]total[/]", str(report.files), str(report.bytes))
        console.print(table)
        verb = "would free" if dry_run else "freed"
        console.print(
            f"{verb} {report.bytes} bytes in {report.files} files "
            f"(cutoff {report.cutoff:%Y-%m-%d %H:%M} UTC)"
        )
        for error in report.errors:
            console.print(f"[red]error:[/] {error}")
    if report.errors:
        raise typer.Exit(1)
