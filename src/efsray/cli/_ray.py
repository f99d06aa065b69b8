"""Options shared by the commands that use Ray (cluster, backtest, demo)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["AddressOpt", "NumCpusOpt"]

AddressOpt = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster to use: HOST:6379 (the head's GCS port), ray://HOST:10001 (Ray "
        "Client), 'auto' (the `ray start` cluster on this machine) or 'local'. Default: "
        "RAY_ADDRESS, else a private Ray started in this process.",
        show_default=False,
    ),
]
NumCpusOpt = Annotated[
    int | None,
    typer.Option(
        "--num-cpus",
        min=1,
        max=4096,
        help="CPUs of the local Ray (only without --address). Default: all.",
        show_default=False,
    ),
]
