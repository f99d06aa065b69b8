"""``efsray``: the command line. Errors print as one message, never a traceback."""

from __future__ import annotations

import sys

import typer
from rich.markup import escape
from typer.exceptions import Abort, Exit, TyperException

from efsray import __version__
from efsray.cli._common import EnvFileOpt, JsonOpt, console, err_console, print_json, settings_from
from efsray.errors import EfsrayError

app = typer.Typer(
    name="efsray",
    help="Shared storage for Ray clusters on AWS EFS: a crash-safe store for market data, "
    "checkpoints and backtest results, mount management, monitoring, and the Neon connector.\n\n"
    "With no AWS at all everything runs on the embedded default: a local directory "
    "(./efs-data) as the shared volume and an in-process Ray.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.command("version")
def version_cmd() -> None:
    """Print the efsray version."""
    console.print(__version__)


@app.command("config")
def config_cmd(env_file: EnvFileOpt = None, json_out: JsonOpt = False) -> None:
    """Show the effective settings (environment and --env-file), secrets masked."""
    described = settings_from(env_file).describe()
    if json_out:
        print_json(described)
        return
    for key, value in described.items():
        console.print(f"{key:<24} {escape(str(value)) if value is not None else '-'}")


def _register() -> None:
    """Attach every command group: each module ``efsray.cli.<name>`` (no leading ``_``)
    defines ``register(app)``. Discovery keeps this file free of per-command edits."""
    import importlib
    import pkgutil

    import efsray.cli as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "app":
            continue
        importlib.import_module(f"efsray.cli.{info.name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, turn efsray errors into exit codes."""
    _register()
    try:
        result = app(args=argv, standalone_mode=False)
    except EfsrayError as exc:
        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return exc.exit_code
    except Exit as exc:
        return int(exc.exit_code)
    except Abort:
        err_console.print("aborted")
        return 130
    except TyperException as exc:
        # typer >= 0.29 bundles its own click: usage errors (unknown option, missing argument,
        # bad value) are typer._click exceptions, all TyperException subclasses with show().
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err_console.print(f"error: {escape(str(exc))}", highlight=False, soft_wrap=True)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
