"""``efsray compose``: lint compose and env files, render the EFS volume block, make secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from efsray.cli._common import (
    EnvFileOpt,
    JsonOpt,
    console,
    err_console,
    print_json,
    settings_from,
)

_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def register(app: typer.Typer) -> None:
    compose = typer.Typer(
        help="Compose stacks: lint files against efsray's Ray/EFS rules and the compose-spec "
        "schema, render the EFS volume block, create the Ray auth token secret.",
        no_args_is_help=True,
    )

    @compose.command("lint")
    def lint_cmd(
        files: Annotated[
            list[Path],
            typer.Argument(help="Compose files (and .env files) to check.", show_default=False),
        ],
        json_out: JsonOpt = False,
        strict: Annotated[
            bool, typer.Option("--strict", help="Warnings fail too (exit 1).")
        ] = False,
        no_schema: Annotated[
            bool, typer.Option("--no-schema", help="Skip the compose-spec schema check.")
        ] = False,
        env_file: EnvFileOpt = None,
    ) -> None:
        """Check compose files: each finding names the service, the rule, why it matters
        and the fix. Exit 1 when a file has errors (or warnings, with --strict)."""
        from efsray.compose import lint_paths

        env = _env_values(env_file) if env_file is not None else None
        reports = lint_paths(files, env=env, schema=not no_schema)
        if json_out:
            print_json(
                {
                    "ok": all(r.ok for r in reports),
                    "files": [
                        {
                            "file": r.file,
                            "kind": r.kind,
                            "ok": r.ok,
                            "errors": r.errors,
                            "warnings": r.warnings,
                            "findings": list(r.findings),
                        }
                        for r in reports
                    ],
                }
            )
        else:
            for report in reports:
                for f in report.findings:
                    style = _STYLE[f.severity.value]
                    _say(
                        f"{escape(f.location)}: [{style}]{f.severity.value}[/] "
                        f"[bold]{f.rule}[/] {f.name}"
                    )
                    _say(f"    {escape(f.message)}")
                    _say_advice(f.why, f.fix)
            errors = sum(r.errors for r in reports)
            warnings = sum(r.warnings for r in reports)
            clean = sum(1 for r in reports if not r.findings)
            _say(
                f"{len(reports)} file(s) checked: {errors} error(s), {warnings} warning(s), "
                f"{clean} file(s) clean"
            )
        failed = any(r.errors or (strict and r.warnings) for r in reports)
        if failed:
            raise typer.Exit(1)

    @compose.command("render")
    def render_cmd(
        env_file: EnvFileOpt = None,
        root_dir: Annotated[
            str,
            typer.Option(
                "--root-dir",
                help="EFS directory holding data/, models/ and logs/ (the access point root).",
            ),
        ] = "/efsray",
        placeholder: Annotated[
            bool,
            typer.Option(
                "--placeholder",
                help="Write ${EFS_DNS_NAME:?} and the recommended options, as the shipped "
                "files do.",
            ),
        ] = False,
        json_out: JsonOpt = False,
    ) -> None:
        """Print the compose `volumes:` block (EFS over NFS) for the EFS settings.

        The options are EFSMountConfig's (EFS_NFS_VERSION, EFS_MOUNT_OPTIONS apply); the
        address is EFS_MOUNT_TARGET_IP when set, else EFS_DNS_NAME, as for `efsray mount`.
        """
        from efsray.compose import DNS_PLACEHOLDER, efs_volumes, render_volumes_yaml

        if placeholder:
            volumes = efs_volumes(DNS_PLACEHOLDER, root_dir)
        else:
            import warnings

            from efsray.mount.config import EFSMountConfig

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                config = EFSMountConfig.from_settings(settings_from(env_file))
                volumes = efs_volumes(root_dir=root_dir, config=config)
            for note in dict.fromkeys(str(w.message) for w in caught):
                err_console.print(f"[yellow]warning:[/] {escape(note)}", highlight=False)
        if json_out:
            print_json({"volumes": volumes})
        else:
            typer.echo(render_volumes_yaml(volumes), nl=False)

    @compose.command("token")
    def token_cmd(
        path: Annotated[
            Path,
            typer.Argument(
                help="Where to create the token file, e.g. deploy/secrets/ray_auth_token."
            ),
        ],
        uid: Annotated[
            int,
            typer.Option(
                "--uid", min=0, max=2**32 - 2, help="The containers' user id (who must read it)."
            ),
        ] = 1000,
        gid: Annotated[
            int, typer.Option("--gid", min=0, max=2**32 - 2, help="The containers' group id.")
        ] = 100,
        json_out: JsonOpt = False,
    ) -> None:
        """Create a Ray auth token file the containers (uid 1000, gid 100) can read: as root,
        chowned to them, mode 0600. Never overwrites, never prints the token."""
        from efsray.compose import write_token

        written = write_token(path, uid=uid, gid=gid)
        if json_out:
            print_json(
                {
                    "path": str(written.path),
                    "mode": f"{written.mode:04o}",
                    "uid": written.uid,
                    "gid": written.gid,
                    "container_readable": written.container_readable,
                }
            )
            return
        _say(f"wrote a new token to {escape(str(written.path))}: {escape(written.note)}")

    @compose.command("rules")
    def rules_cmd(json_out: JsonOpt = False) -> None:
        """List every lint rule: id, severity, why it matters, and the fix."""
        from efsray.compose import PARSE_RULES, RULES

        infos = [r.info for r in RULES] + list(PARSE_RULES.values())
        if json_out:
            print_json(infos)
            return
        for info in sorted(infos, key=lambda i: i.id):
            _say(
                f"[bold]{info.id}[/] {info.name} [{_STYLE[info.severity.value]}]"
                f"{info.severity.value}[/]"
            )
            _say_advice(info.why, info.fix)

    app.add_typer(compose, name="compose")


def _say(markup: str) -> None:
    console.print(markup, highlight=False, soft_wrap=True)


def _say_advice(why: str, fix: str) -> None:
    """A finding's or rule's advice, indented under it."""
    _say(f"    [dim]why:[/] {escape(why)}")
    _say(f"    [dim]fix:[/] {escape(fix)}")


def _env_values(env_file: Path) -> dict[str, str]:
    """Values to interpolate compose files with, read from an env file (as Compose would)."""
    from dotenv import dotenv_values

    from efsray.errors import ConfigError

    if not env_file.is_file():
        raise ConfigError(f"env file {str(env_file)!r} does not exist or is not a file")
    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}
