"""``efsray mount | unmount | mounts | health``: mount management from the shell.

``efsray health`` is built to be a container healthcheck: it answers within ``--timeout``
seconds whatever the mount does, and its exit code says which way it went (0 healthy, 1 error,
6 hung; 2 bad settings). It starts fast: nothing heavy is imported.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from efsray.cli._common import EnvFileOpt, JsonOpt, console, err_console, print_json, settings_from

if TYPE_CHECKING:
    from efsray.mount.config import EFSMountConfig

MountinfoOpt = Annotated[
    Path,
    typer.Option(
        "--mountinfo",
        help="Mount table to read, e.g. /proc/1/mountinfo for the host's from a container.",
    ),
]
# A str, not a Path: click stats Path arguments, and a stat on a hung mount never returns.
PathArg = Annotated[
    str | None,
    typer.Argument(help="Mount path. Default: EFS_MOUNT_PATH.", show_default=False),
]
_MOUNTINFO = Path("/proc/self/mountinfo")


def _config(env_file: Path | None) -> EFSMountConfig:
    from efsray.mount.config import EFSMountConfig

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = EFSMountConfig.from_settings(settings_from(env_file))
    for w in caught:
        err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False)
    return config


def mount_cmd(
    env_file: EnvFileOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the command, fstab line and driver_opts.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="Seconds per mount attempt.", min=0.1, max=86400)
    ] = 30.0,
    attempts: Annotated[
        int, typer.Option(help="Mount attempts before giving up.", min=1, max=100)
    ] = 3,
    check_port: Annotated[
        bool, typer.Option("--check-port", help="Also connect to TCP 2049 before mounting.")
    ] = False,
    mountinfo: MountinfoOpt = _MOUNTINFO,
    json_out: JsonOpt = False,
) -> None:
    """Mount EFS at EFS_MOUNT_PATH with AWS's recommended options (prints the exact command).

    Already mounted with the same options counts as success. Needs root (CAP_SYS_ADMIN).
    """
    from efsray.mount.manager import EFSMountManager

    config = _config(env_file)
    command = config.mount_command()
    if dry_run:
        plan: dict[str, Any] = {
            **config.describe(),
            "argv": config.mount_argv(),
            "command": command,
            "fstab_line": config.fstab_line(),
        }
        if not (config.tls or config.iam or config.access_point):
            plan["compose_driver_opts"] = config.compose_driver_opts()
        if json_out:
            print_json(plan)
            return
        console.print(escape(command), highlight=False, soft_wrap=True)
        console.print(f"# fstab: {escape(plan['fstab_line'])}", highlight=False, soft_wrap=True)
        if "compose_driver_opts" in plan:
            console.print(f"# compose driver_opts: {plan['compose_driver_opts']}", soft_wrap=True)
        return
    if not json_out:
        console.print(f"$ {escape(command)}", highlight=False, soft_wrap=True)
    manager = EFSMountManager(
        config,
        mount_timeout=timeout,
        attempts=attempts,
        check_port=check_port,
        mountinfo_path=mountinfo,
    )
    result = manager.mount()
    if json_out:
        print_json(result)
        return
    if result.already_mounted:
        console.print(f"already mounted at {escape(result.mount_path)} with matching options")
    else:
        console.print(f"mounted at {escape(result.mount_path)} (attempt {result.attempts})")
    if result.drift is not None and not result.drift.ok:
        err_console.print(f"[yellow]drift:[/] {escape(result.drift.summary())}", highlight=False)


def unmount_cmd(
    path: PathArg = None,
    env_file: EnvFileOpt = None,
    lazy: Annotated[
        bool, typer.Option("--lazy/--no-lazy", help="Detach lazily when busy or hung.")
    ] = True,
    timeout: Annotated[float, typer.Option(help="Seconds for umount.", min=0.1, max=86400)] = 30.0,
    mountinfo: MountinfoOpt = _MOUNTINFO,
    json_out: JsonOpt = False,
) -> None:
    """Unmount EFS_MOUNT_PATH (or PATH). Nothing mounted there is not an error."""
    from efsray.mount.manager import unmount_path

    target = os.path.abspath(path if path is not None else settings_from(env_file).efs_mount_path)
    done = unmount_path(target, lazy=lazy, timeout=timeout, mountinfo_path=mountinfo)
    if json_out:
        print_json({"mount_path": target, "unmounted": done})
    elif done:
        console.print(f"unmounted {escape(target)}")
    else:
        console.print(f"nothing is mounted at {escape(target)}")


def mounts_cmd(
    mountinfo: MountinfoOpt = _MOUNTINFO,
    json_out: JsonOpt = False,
) -> None:
    """List every NFS/EFS mount on this host: source, live options, drift from AWS's advice."""
    from efsray.mount.drift import option_drift
    from efsray.mount.mountinfo import read_mountinfo

    rows = [
        (m, option_drift(m.options, mount_point=m.mount_point))
        for m in read_mountinfo(mountinfo)
        if m.is_nfs
    ]
    if json_out:
        print_json(
            [
                {
                    "mount_point": m.mount_point,
                    "source": m.source,
                    "fs_type": m.fs_type,
                    "options": list(m.options),
                    "drift_ok": drift.ok,
                    "drift": drift.items,
                }
                for m, drift in rows
            ]
        )
        return
    if not rows:
        console.print(f"no NFS or EFS mounts in {escape(str(mountinfo))}")
        return
    from rich.table import Table

    table = Table("mount point", "source", "type", "options", "drift")
    for m, drift in rows:
        table.add_row(
            escape(m.mount_point),
            escape(m.source),
            m.fs_type,
            escape(",".join(m.options)),
            "[green]ok[/]" if drift.ok else f"[yellow]{escape(drift.summary())}[/]",
        )
    console.print(table)


def health_cmd(
    path: PathArg = None,
    env_file: EnvFileOpt = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds before the mount counts as hung. Default: EFS_HEALTH_TIMEOUT (5).",
            min=0.1,
            max=86400,
            show_default=False,
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Probe the mount (write, fsync, read, delete) without ever hanging.

    Exit codes: 0 healthy, 1 error (the probe failed), 6 hung (no answer within --timeout),
    2 bad settings. Use as a container healthcheck: `efsray health --timeout 5`.
    """
    from efsray.mount.health import check_health

    # The report says everything; keep the library's log lines out of the healthcheck output.
    logging.getLogger("efsray.mount").addHandler(logging.NullHandler())
    settings = settings_from(env_file)
    target = path if path is not None else settings.efs_mount_path
    report = check_health(target, timeout=timeout if timeout else settings.efs_health_timeout)
    if json_out:
        print_json(report.as_dict())
    else:
        color = {"healthy": "green", "hung": "red", "error": "red"}[report.status]
        console.print(
            f"[{color}]{report.status}[/] {escape(report.mount_path)}"
            + (
                f"  write {report.write_time_ms} ms, fsync {report.fsync_time_ms} ms, "
                f"read {report.read_time_ms} ms, used {report.used_percent}%"
                if report.healthy
                else ""
            ),
            highlight=False,
        )
        if report.error:
            err_console.print(escape(report.error), highlight=False)
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    app.command("mount")(mount_cmd)
    app.command("unmount")(unmount_cmd)
    app.command("mounts")(mounts_cmd)
    app.command("health")(health_cmd)
