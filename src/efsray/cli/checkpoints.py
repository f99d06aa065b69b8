"""``efsray checkpoints ls|show|prune|alias``: model checkpoints from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from efsray.cli._common import (
    EnvFileOpt,
    JsonOpt,
    RootOpt,
    console,
    fmt_size,
    print_json,
    store_root,
)
from efsray.cli.cleanup import ForceOpt

if TYPE_CHECKING:
    from efsray.store import CheckpointStore

checkpoints_app = typer.Typer(
    help="Model checkpoints: list models and versions, show one, prune, move aliases.",
    no_args_is_help=True,
)

ModelArg = Annotated[str, typer.Argument(help="Model id.", show_default=False)]
VersionOpt = Annotated[
    int | None,
    typer.Option("--version", "-v", help="Version (default: the latest).", min=1, max=2**62),
]
AliasOpt = Annotated[str | None, typer.Option("--alias", "-a", help="Resolve this alias.")]


def register(app: typer.Typer) -> None:
    app.add_typer(checkpoints_app, name="checkpoints")


def _open(root: Path | None, env_file: Path | None) -> CheckpointStore:
    from efsray.store import Store

    return Store(store_root(root, env_file), create=False).checkpoints


@checkpoints_app.command("ls")
def ls_cmd(
    model: Annotated[
        str | None, typer.Argument(help="List this model's versions (default: list models).")
    ] = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """List models, or the versions of one model (oldest first) with their aliases."""
    store = _open(root, env_file)
    if model is None:
        rows = [(name, store.latest_version(name), store.aliases(name)) for name in store.models()]
        if json_out:
            print_json([{"model": n, "latest": v, "aliases": a} for n, v, a in rows])
            return
        table = Table("model", "latest", "aliases")
        for name, latest, alias_map in rows:
            aliases = ", ".join(f"{a}=v{v}" for a, v in sorted(alias_map.items()))
            table.add_row(escape(name), str(latest), escape(aliases))
        console.print(table)
        return
    infos = store.list(model)
    if json_out:
        print_json(
            [
                {
                    "version": i.version, "kind": i.kind, "files": len(i.files), "bytes": i.bytes,
                    "committed_at": i.committed_at, "aliases": list(i.aliases),
                    "metadata": i.metadata, "path": i.path,
                }
                for i in infos
            ]
        )  # fmt: skip
        return
    table = Table("version", "kind", "files", "size", "committed at", "aliases", "metadata")
    for i in infos:
        meta = ", ".join(f"{k}={v}" for k, v in list(i.metadata.items())[:4])
        table.add_row(
            str(i.version), i.kind, str(len(i.files)), fmt_size(i.bytes), i.committed_at[:19],
            escape(", ".join(i.aliases)), escape(meta[:60]),
        )  # fmt: skip
    console.print(table)


@checkpoints_app.command("show")
def show_cmd(
    model: ModelArg,
    version: VersionOpt = None,
    alias: AliasOpt = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Read every file and check its checksum.")
    ] = False,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show one version: its files, sizes, checksums, metadata and aliases."""
    store = _open(root, env_file)
    info = store.info(model, version, alias=alias)
    if verify:
        store.verify(model, info.version)
    if json_out:
        print_json({**_jsonable(info), "verified": verify, "path": info.path})
        return
    console.print(f"[bold]{escape(model)}[/] v{info.version} ({info.kind}, {fmt_size(info.bytes)})")
    console.print(f"committed {info.committed_at} by {escape(info.writer)}")
    console.print(f"path      {escape(info.path)}")
    if info.aliases:
        console.print(f"aliases   {escape(', '.join(info.aliases))}")
    for key, value in info.metadata.items():
        console.print(f"  {escape(str(key))} = {escape(repr(value))}")
    table = Table("file", "size", "checksum")
    for f in info.files:
        table.add_row(escape(f.path), fmt_size(f.bytes), f.digest[:24] + "...")
    console.print(table)
    if verify:
        console.print("[green]all files verified[/]")


def _jsonable(info: object) -> dict[str, object]:
    from efsray.cli._common import to_jsonable

    value = to_jsonable(info)
    assert isinstance(value, dict)
    return value


@checkpoints_app.command("prune")
def prune_cmd(
    model: ModelArg,
    keep_last: Annotated[
        int | None,
        typer.Option("--keep-last", help="Keep the newest N versions.", min=0, max=2**62),
    ] = None,
    keep_best: Annotated[
        int | None,
        typer.Option("--keep-best", help="Keep the best M by --metric.", min=0, max=2**62),
    ] = None,
    metric: Annotated[str | None, typer.Option("--metric", help="Metadata key to rank by.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="'max' or 'min': which is best.")] = "max",
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            help="Keep versions superseded less than this many seconds ago.",
            min=0,
            max=3650 * 86400,
        ),
    ] = 3600.0,
    save_policy: Annotated[
        bool, typer.Option("--save-policy", help="Store these settings for `efsray cleanup`.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Change nothing; report.")] = False,
    force: ForceOpt = False,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Remove versions that are not latest, aliased, kept by keep-last/keep-best, or recent."""
    from efsray.store import RetentionPolicy
    from efsray.store.checkpoints import require_safe_grace

    require_safe_grace(grace, force=force, dry_run=dry_run)
    store = _open(root, env_file)
    stored = store.retention(model)
    policy = RetentionPolicy(
        keep_last=stored.keep_last if keep_last is None else keep_last,
        keep_best=stored.keep_best if keep_best is None else keep_best,
        metric=metric or stored.metric,
        mode=mode,  # type: ignore[arg-type]  # RetentionPolicy validates it
    )
    if save_policy and not dry_run:
        store.set_retention(model, policy)
    result = store.prune(model, policy=policy, grace=grace, dry_run=dry_run)
    if json_out:
        print_json({**_jsonable(result), "policy": policy.to_json()})
        return
    verb = "would remove" if dry_run else "removed"
    removed = ", ".join(f"v{v}" for v in result.removed) or "nothing"
    console.print(
        f"{escape(model)}: {verb} {removed} ({result.files} files, {fmt_size(result.bytes)})"
    )
    if result.orphans:
        console.print(f"  and {result.orphans} unreferenced data directories of crashed saves")
    for v in result.kept:
        console.print(f"  kept v{v}: {escape(result.reasons.get(v, ''))}")


@checkpoints_app.command("alias")
def alias_cmd(
    model: ModelArg,
    alias: Annotated[str, typer.Argument(help="Alias name, e.g. production.", show_default=False)],
    version: Annotated[
        int | None,
        typer.Argument(help="Version to point the alias at.", show_default=False, min=1, max=2**62),
    ] = None,
    delete: Annotated[bool, typer.Option("--delete", help="Remove the alias.")] = False,
    expect: Annotated[
        int | None,
        typer.Option(
            "--expect", help="Move only if the alias points at this version.", min=0, max=2**62
        ),
    ] = None,
    root: RootOpt = None,
    env_file: EnvFileOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show, set (atomically) or delete an alias of a model's version."""
    from efsray.errors import InvalidDataError

    store = _open(root, env_file)
    if delete:
        previous = store.remove_alias(model, alias)
        result = {"model": model, "alias": alias, "version": None, "previous": previous}
    elif version is None:
        current = store.aliases(model).get(alias)
        result = {"model": model, "alias": alias, "version": current, "previous": current}
    else:
        if version < 1:
            raise InvalidDataError(f"version must be >= 1, got {version}")
        previous = store.set_alias(
            model, alias, version, expect="any" if expect is None else expect
        )
        result = {"model": model, "alias": alias, "version": version, "previous": previous}
    if json_out:
        print_json(result)
        return
    console.print(
        f"{escape(model)} {escape(alias)} -> "
        f"{'v' + str(result['version']) if result['version'] else '(none)'}"
        + (
            f" (was v{result['previous']})"
            if result["previous"] not in (None, result["version"])
            else ""
        )
    )
