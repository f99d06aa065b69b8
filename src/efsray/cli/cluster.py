"""``efsray cluster info``: connect to Ray as the other commands would, and report it."""

from __future__ import annotations

import typer

from efsray.cli._common import EnvFileOpt, JsonOpt, console, print_json, settings_from
from efsray.cli._ray import AddressOpt, NumCpusOpt


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Ray: check the connection that `backtest` and `demo` would use.",
        no_args_is_help=True,
    )

    @group.command("info")
    def info(
        address: AddressOpt = None,
        num_cpus: NumCpusOpt = None,
        env_file: EnvFileOpt = None,
        json_out: JsonOpt = False,
    ) -> None:
        """Connect to Ray (RAY_ADDRESS, --address, or a local Ray) and show nodes and CPUs."""
        from efsray.cluster import connect

        settings = settings_from(env_file)
        with connect(settings, address=address, num_cpus=num_cpus) as cluster:
            if json_out:
                print_json(cluster)
                return
            console.print(
                f"Ray {cluster.mode}: {cluster.nodes} node(s), {cluster.cpus:g} CPUs, "
                f"auth {cluster.auth}" + (f", GCS {cluster.address}" if cluster.address else "")
            )

    app.add_typer(group, name="cluster")
