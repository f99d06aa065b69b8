"""``efsray import-legacy ROOT``: bring the original plan's EFSDataManager tree into the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from efsray.cli._common import (
    EnvFileOpt,
    JsonOpt,
    RootOpt,
    console,
    print_json,
    store_root,
)

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("import-legacy")(import_legacy_cmd)


def import_legacy_cmd(
    legacy_root: Annotated[
        Path,
        typer.Argument(
            metavar="ROOT",
            help="The old mount: the directory holding market_data/, models/, results/.",
            show_default=False,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and validate everything; write nothing.")
    ] = False,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Import market snapshots, checkpoints (opaque bytes, never unpickled) and backtest
    results written by the original plan's EFSDataManager. Idempotent: run it again and
    nothing is imported twice. Reports every file skipped and why."""
    from efsray.legacy_import import import_legacy
    from efsray.store import Store

    store = Store(store_root(root, env_file), create=not dry_run)
    report = import_legacy(store, legacy_root, dry_run=dry_run)
    if json_out:
        print_json(report)
        return
    done = "would import" if dry_run else "imported"
    summary = Table(title=f"legacy tree {escape(report.root)}", title_justify="left")
    for name in ("kind", done, "already imported", "skipped"):
        summary.add_column(name, justify="left" if name == "kind" else "right")
    for kind in ("market", "checkpoint", "result"):
        summary.add_row(
            kind,
            str(report.count(done, kind)),  # type: ignore[arg-type]
            str(report.count("already imported", kind)),
            str(report.count("skipped", kind)),
        )
    console.print(summary)
    for item in report.skipped:
        console.print(f"skipped {escape(item.source)}: {escape(item.reason)}", soft_wrap=True)
