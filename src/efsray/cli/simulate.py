"""``efsray simulate``: an EFS-like FUSE mount; ``efsray simfs``: counters, faults, hangs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from efsray.cli._common import JsonOpt, console, err_console, print_json
from efsray.errors import ConfigError

__all__ = ["register"]

# str, not Path: click stats Path arguments, and a stat of a hung mount never returns.
MountArg = Annotated[
    str, typer.Argument(help="The mount point (an existing directory).", show_default=False)
]
ControlOpt = Annotated[
    Path | None,
    typer.Option(
        "--control",
        help="Control socket path. Default: derived from the mount point, under $TMPDIR.",
        show_default=False,
    ),
]
OpsOpt = Annotated[
    str,
    typer.Option("--ops", help="Operation kinds, comma-separated (write,fsync,...), or '*'."),
]
PathOpt = Annotated[
    str, typer.Option("--path", help="fnmatch pattern on the path inside the mount ('/a/*').")
]


def _parse_latency(values: list[str]) -> dict[str, float]:
    overrides: dict[str, float] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError("no NAME=")
            number = float(raw.removesuffix("ms")) / (1000.0 if raw.endswith("ms") else 1.0)
        except ValueError:
            raise ConfigError(
                f"--latency expects NAME=SECONDS or NAME=MILLISms (for example write=0.004 or "
                f"write=4ms), got {item!r}"
            ) from None
        overrides[key.strip()] = number
    return overrides


def _config(mountpoint: str, control: Path | None, **kwargs: Any) -> Any:
    from efsray.simfs import SimFSConfig

    return SimFSConfig(mountpoint=Path(mountpoint), control=control, **kwargs)


def _control(mountpoint: str, control: Path | None) -> Any:
    from efsray.simfs import SimFSControl, default_control_path

    return SimFSControl(control if control is not None else default_control_path(mountpoint))


def simulate(
    mountpoint: MountArg,
    backing: Annotated[
        Path,
        typer.Option(
            "--backing",
            help="Directory that holds the simulated volume's files (outside the mount point).",
            show_default=False,
        ),
    ],
    profile: Annotated[
        str, typer.Option("--profile", help="Latency profile: efs-gp, efs-maxio or none.")
    ] = "efs-gp",
    latency: Annotated[
        list[str] | None,
        typer.Option(
            "--latency",
            help="Override one latency (repeatable): read, write, fsync, metadata, namespace, "
            "readdir (seconds, or with an 'ms' suffix), e.g. --latency write=4ms.",
            show_default=False,
        ),
    ] = None,
    jitter: Annotated[
        float | None,
        typer.Option(
            "--jitter",
            help="Spread each delay uniformly by +/- this fraction (0-1).",
            show_default=False,
            min=0,
            max=1,
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed for jitter and probabilistic faults.",
            show_default=False,
            min=0,
            max=2**32 - 1,
        ),
    ] = None,
    attr_timeout: Annotated[
        float,
        typer.Option(
            "--attr-timeout",
            help="Seconds the kernel may cache attributes and lookups (0: every lookup is a "
            "round trip).",
            min=0,
            max=3600,
        ),
    ] = 0.0,
    hard_remove: Annotated[
        bool,
        typer.Option(
            "--hard-remove", help="Unlink open files at once (no .fuse_hidden silly rename)."
        ),
    ] = False,
    allow_other: Annotated[
        bool, typer.Option("--allow-other", help="Let other users use the mount.")
    ] = False,
    control: ControlOpt = None,
    background: Annotated[
        bool,
        typer.Option(
            "--background",
            help="Start in the background, wait until mounted, print the pid and return.",
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", help="Seconds to wait for a background mount.", min=0.1, max=3600
        ),
    ] = 30.0,
    json_out: JsonOpt = False,
) -> None:
    """Mount an EFS-like FUSE filesystem over a local directory.

    Adds per-operation EFS latency, refuses renameat2 flags like NFS, counts operations, and
    injects faults or hangs on command (efsray simfs ...). Runs in the foreground until
    Ctrl-C or SIGTERM (then unmounts cleanly), or with --background as its own process.
    """
    overrides: dict[str, Any] = _parse_latency(latency or [])
    if jitter is not None:
        overrides["jitter"] = jitter
    config = _config(
        mountpoint,
        control,
        backing=backing,
        profile=profile,
        latency=overrides,
        seed=seed,
        attr_timeout=attr_timeout,
        hard_remove=hard_remove,
        allow_other=allow_other,
    )
    if background:
        from efsray.simfs import SimFSProcess

        handle = SimFSProcess.start(config, timeout=timeout, detach=True)
        info = {
            "pid": handle.pid,
            "mountpoint": str(handle.path),
            "backing": str(handle.backing),
            "control": str(config.control_path),
            "log": str(handle.log_path),
            "profile": profile,
        }
        if json_out:
            print_json(info)
        else:
            console.print(
                f"simfs pid {handle.pid} mounted {escape(str(handle.path))} "
                f"(profile {escape(profile)}); control socket {escape(str(config.control_path))}; "
                f"log {escape(str(handle.log_path))}. Stop it with: efsray simfs stop "
                f"{escape(str(handle.path))}",
                highlight=False,
            )
        return

    from efsray.simfs.server import serve

    def announce(status: dict[str, Any]) -> None:
        if json_out:
            print_json({**status, "control": str(config.control_path)})
        else:
            err_console.print(
                f"mounted {escape(status['mountpoint'])} over {escape(status['backing'])} "
                f"(profile {escape(profile)}); control socket "
                f"{escape(str(config.control_path))}. Ctrl-C or SIGTERM unmounts.",
                highlight=False,
            )

    serve(config, on_ready=announce)


def status(mountpoint: MountArg, control: ControlOpt = None, json_out: JsonOpt = False) -> None:
    """Show a simulator's mount, profile, armed faults and hangs."""
    info = _control(mountpoint, control).status()
    if json_out:
        print_json(info)
        return
    console.print(
        f"pid {info['pid']}  mounted={info['mounted']}  {escape(info['mountpoint'])} <- "
        f"{escape(info['backing'])}  profile {escape(info['profile']['name'])}  "
        f"hung now {info['hung_now']}",
        highlight=False,
    )
    for rule in info["faults"]:
        console.print(f"fault {escape(str(rule))}", highlight=False)
    for rule in info["hangs"]:
        console.print(f"hang  {escape(str(rule))}", highlight=False)


def counters(
    mountpoint: MountArg,
    reset: Annotated[bool, typer.Option("--reset", help="Zero them after reading.")] = False,
    control: ControlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the operation counters (and optionally reset them)."""
    ctl = _control(mountpoint, control)
    snapshot = ctl.reset() if reset else ctl.counters()
    if json_out:
        print_json(snapshot)
        return
    for kind, count in sorted(snapshot.ops.items()):
        console.print(f"{kind:<12} {count:>10}")
    console.print(f"{'total':<12} {snapshot.total():>10}")
    console.print(
        f"bytes read {snapshot.bytes_read}, written {snapshot.bytes_written}; "
        f"O_APPEND opens {snapshot.open_append}; renameat2 refused {snapshot.renames_rejected}; "
        f"faults injected {snapshot.faults_total}"
    )


def fault(
    mountpoint: MountArg,
    error: Annotated[str, typer.Argument(help="EIO, ENOSPC, EDQUOT, ESTALE, ...")],
    ops: OpsOpt = "*",
    path: PathOpt = "*",
    nth: Annotated[
        int, typer.Option("--nth", help="Fail the Nth matching operation.", min=1, max=2**62)
    ] = 1,
    probability: Annotated[
        float | None,
        typer.Option("--probability", help="Fail each match with this probability.", min=0, max=1),
    ] = None,
    times: Annotated[
        int,
        typer.Option("--times", help="How many times it fires (0: every time).", min=0, max=2**62),
    ] = 1,
    control: ControlOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Arm a fault: fail matching operations with ERROR."""
    rule_id = _control(mountpoint, control).inject(
        error,
        ops=ops,
        path=path,
        nth=nth,
        probability=probability,
        times=None if times == 0 else times,
    )
    if json_out:
        print_json({"id": rule_id})
    else:
        console.print(f"armed fault {rule_id}")


def clear(mountpoint: MountArg, control: ControlOpt = None) -> None:
    """Disarm every fault."""
    console.print(f"disarmed {_control(mountpoint, control).clear_faults()} fault(s)")


def hang(
    mountpoint: MountArg,
    ops: OpsOpt = "*",
    path: PathOpt = "*",
    nth: Annotated[
        int, typer.Option("--nth", help="Hang from the Nth matching op on.", min=1, max=2**62)
    ] = 1,
    control: ControlOpt = None,
) -> None:
    """Block matching operations until `efsray simfs release`."""
    rule_id = _control(mountpoint, control).hang(ops=ops, path=path, nth=nth)
    console.print(f"armed hang {rule_id}")


def release(mountpoint: MountArg, control: ControlOpt = None) -> None:
    """Disarm every hang and let blocked operations go on."""
    console.print(f"released {_control(mountpoint, control).release()} blocked operation(s)")


def stop(mountpoint: MountArg, control: ControlOpt = None) -> None:
    """Release hangs, unmount, and end a simulator started with --background."""
    from efsray.simfs import SimFSProcess

    handle = SimFSProcess.attach(mountpoint, control=control)
    handle.stop()
    console.print(f"stopped simfs pid {handle.pid}; {escape(str(handle.path))} is unmounted")


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
    group = typer.Typer(
        name="simfs",
        help="Control a running simulated filesystem (efsray simulate): counters, faults, "
        "hangs, stop.",
        no_args_is_help=True,
    )
    for command in (status, counters, fault, clear, hang, release, stop):
        group.command(command.__name__)(command)
    app.add_typer(group, name="simfs")
