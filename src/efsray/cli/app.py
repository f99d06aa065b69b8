"""``efsray``: the command line. Errors print as one message, never a traceback.

``--debug`` (or ``EFSRAY_DEBUG=1``) adds the traceback; the exit codes are ``EXIT_CODES``.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.exceptions import Abort, Exit, TyperException

from efsray import __version__
from efsray.cli._common import EnvFileOpt, JsonOpt, console, err_console, print_json, settings_from
from efsray.errors import EfsrayError

EXIT_CODES: dict[int, str] = {
    0: "success (health: healthy)",
    1: "failed: a command's own verdict (lint findings, failed tasks, unhealthy)",
    2: "usage: unknown command or option, missing argument, bad value, bad settings or input",
    3: "not found: series, version, checkpoint, run",
    4: "corrupt or foreign store data (checksum, format)",
    5: "storage, mount, database or cluster failure",
    6: "deadline exceeded: a hung mount or server",
    70: "internal error (a bug: rerun with --debug and report the traceback)",
    130: "interrupted",
}
"""Every exit code of ``efsray``, documented in ``efsray --help`` and the README."""

DEBUG_ENV = "EFSRAY_DEBUG"


def _epilog() -> str:
    lines = [f"{code}: {what}" for code, what in EXIT_CODES.items()]
    return "Exit codes:\n\n" + "\n\n".join(lines)


app = typer.Typer(
    name="efsray",
    help="Shared storage for Ray clusters on AWS EFS: a crash-safe store for market data, "
    "checkpoints and backtest results, mount management, monitoring, and the Neon connector.\n\n"
    "With no AWS at all everything runs on the embedded default: a local directory "
    "(./efs-data) as the shared volume and an in-process Ray.",
    epilog=_epilog(),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help=f"Show the traceback of an error (also: {DEBUG_ENV}=1).",
        ),
    ] = False,
) -> None:
    """Options before the command name; ``main`` reads --debug itself (errors arise outside)."""


@app.command("version")
def version_cmd(json_out: JsonOpt = False) -> None:
    """Print the efsray version (--json: {"version": ...})."""
    if json_out:
        print_json({"version": __version__})
        return
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

    if any(c.name == "init" for c in app.registered_commands):
        return  # registered already: tests call main() many times in one process
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "app":
            continue
        importlib.import_module(f"efsray.cli.{info.name}").register(app)


def root_command() -> Any:
    """The app as a click-style command tree (``.commands``, ``.params``): what tests walk."""
    _register()
    return typer.main.get_command(app)


def _debug_requested(argv: list[str]) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
        return True
    for arg in argv:  # global options come before the command name
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            return False
    return False


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: run the app, turn errors into documented exit codes."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    _register()
    try:
        result = app(args=args, prog_name="efsray", standalone_mode=False)
    except EfsrayError as exc:
        _trace(debug)
        _error(str(exc))
        return exc.exit_code
    except Exit as exc:
        return int(exc.exit_code)
    except Abort:
        err_console.print("aborted")
        return 130
    except TyperException as exc:
        # typer >= 0.29 bundles its own click: usage errors (unknown option, missing argument,
        # bad value) are typer._click exceptions, all TyperException subclasses with show().
        _trace(debug)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            _error(str(exc))
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except OSError as exc:
        # An OS error that no layer translated (a file named on the command line, a socket).
        _trace(debug)
        _error(f"{exc}; check the path or resource named, its permissions and free space")
        return 5
    except Exception as exc:  # noqa: BLE001 - the CLI's last resort: no input shows a traceback
        _trace(debug)
        _error(
            f"internal error {type(exc).__name__}: {exc}. This is a bug in efsray: rerun with "
            f"--debug (or {DEBUG_ENV}=1) and report the traceback"
        )
        return 70
    return result if isinstance(result, int) else 0


def _trace(debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
