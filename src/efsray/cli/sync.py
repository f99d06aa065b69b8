"""``efsray sync``: the store <-> database bridge (the compose file's neon-connector)."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Annotated

import typer

from efsray.cli._common import EnvFileOpt, JsonOpt, RootOpt, print_json, settings_from


def sync_cmd(
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit.")] = False,
    interval: Annotated[
        float | None,
        typer.Option(
            "--interval",
            help="Seconds between cycles (NEON_SYNC_INTERVAL).",
            show_default=False,
            min=0.01,
            max=86400,
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            help="Health endpoint port, 0 for any (NEON_SYNC_PORT).",
            show_default=False,
            min=0,
            max=65535,
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            "--host",
            help="Health endpoint address (NEON_SYNC_HOST, 127.0.0.1).",
            show_default=False,
        ),
    ] = None,
    export: Annotated[
        str | None,
        typer.Option(
            "--export",
            help="Symbols to export store -> database: 'A,B' or '*' (NEON_SYNC_SYMBOLS).",
            show_default=False,
        ),
    ] = None,
    no_import: Annotated[
        bool, typer.Option("--no-import", help="Do not import market data from the database.")
    ] = False,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Sync the store and the database: market data both ways, backtest runs and the
    checkpoint catalog to the database. Serves health JSON on http://HOST:PORT/health;
    retries with backoff when the database is away; stops cleanly on SIGTERM."""
    from efsray.connector import Database, PoolConfig
    from efsray.connector.service import ServiceConfig, SyncService
    from efsray.connector.sync import Syncer, parse_symbols, store_sources
    from efsray.store import Store

    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    settings = settings_from(env_file)
    pool_config = PoolConfig.from_settings(settings)
    store = Store.open(root if root is not None else settings.store_root)
    symbols = parse_symbols(export if export is not None else settings.neon_sync_symbols)
    runs, checkpoints = store_sources(store)
    config = ServiceConfig(
        interval=interval if interval is not None else settings.neon_sync_interval,
        host=host if host is not None else settings.neon_sync_host,
        port=port if port is not None else settings.neon_sync_port,
        once=once,
    )
    service = SyncService(
        lambda: Database(pool_config),
        store,
        config,
        make_syncer=lambda db: Syncer(
            db,
            store,
            export_symbols=symbols,
            runs=runs,
            checkpoints=checkpoints,
            import_market=not no_import,
        ),
        database_label=pool_config.masked,
    )

    def on_signal(signum: int, _frame: object) -> None:
        logging.getLogger("efsray.connector").info(
            "%s: stopping after the current step", signal.Signals(signum).name
        )
        service.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second signal ends us at once

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if not once:
        bound_host, bound_port = service.start_http()
        sys.stdout.write(f"efsray sync: health on http://{bound_host}:{bound_port}/health\n")
        sys.stdout.flush()
    try:
        report = service.run()
    finally:
        service.close()
    if once and report is not None:
        if json_out:
            print_json(report.summary())
        else:
            s = report.summary()
            sys.stdout.write(
                f"synced in {s['seconds']:.2f} s: {s['bars_imported']} bars imported, "
                f"{s['bars_exported']} exported, {s['runs_upserted']} runs, "
                f"{s['checkpoints_upserted']} checkpoints\n"
            )
    if not once:
        sys.stdout.write("efsray sync: stopped\n")


def register(app: typer.Typer) -> None:
    app.command("sync")(sync_cmd)
