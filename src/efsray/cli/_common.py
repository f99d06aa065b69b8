"""What every command shares: common options, settings, output, and JSON encoding.

Commands import heavy libraries (pyarrow, Ray, psycopg) inside their bodies, so that
``efsray --help`` and ``efsray health`` start fast.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import sys
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from efsray.config import Settings, load_settings

__all__ = [
    "EnvFileOpt",
    "JsonOpt",
    "RootOpt",
    "console",
    "err_console",
    "fmt_num",
    "fmt_pct",
    "fmt_size",
    "print_json",
    "settings_from",
    "store_root",
    "to_jsonable",
]

console = Console(emoji=False)  # ":b:" in user text stays ":b:", not an emoji
err_console = Console(stderr=True, emoji=False)

EnvFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--env-file",
        help="Read settings from this env file too (the environment wins over the file).",
        show_default=False,
    ),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout instead of tables.")
]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root",
        help="Store root directory. Default: EFS_MOUNT_PATH, else ./efs-data.",
        show_default=False,
    ),
]


def settings_from(env_file: Path | None) -> Settings:
    return load_settings(env_file)


def store_root(root: Path | None, env_file: Path | None) -> Path:
    return root if root is not None else settings_from(env_file).store_root


def fmt_num(x: Any) -> str:
    """A number with two decimals; "-" for None or NaN."""
    return "-" if x is None or x != x else f"{x:.2f}"


def fmt_pct(x: Any) -> str:
    """A fraction as a percentage with one decimal; "-" for None or NaN."""
    return "-" if x is None or x != x else f"{100 * x:.1f}%"


def fmt_size(n: int) -> str:
    """Bytes in binary units: ``512 B``, ``1.5 KiB``, ..., ``2.0 TiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def to_jsonable(value: Any) -> Any:
    """Turn dataclasses, datetimes, paths, numpy scalars and NaN into plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):  # dicts, and read-only views (MappingProxyType)
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return to_jsonable(value.item())
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(to_jsonable(value), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
