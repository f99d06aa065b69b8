"""Where things live under the store root, and the format marker.

The directory tree is the original plan's (``market_data/ohlcv``, ``models/checkpoints``,
``results/backtests``, ``logs``, ...). ``.efsray-store.json`` at the root records the
on-disk format, so a future format change is detected instead of misread.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from efsray import __version__
from efsray.errors import StoreFormatError
from efsray.store.names import validate_name
from efsray.store.nfs import (
    create_exclusive,
    ensure_dir,
    forget_tree,
    kind_of,
    list_dir,
    read_bytes,
)

__all__ = ["FORMAT_VERSION", "MARKER_NAME", "StoreLayout"]

FORMAT_VERSION = 1
MARKER_NAME = ".efsray-store.json"

_TREE = (
    "market_data/ohlcv",
    "market_data/indicators",
    "models/trained",
    "models/checkpoints",
    "results/backtests",
    "results/performance",
    "logs",
)
# Entries a fresh volume may hold that do not make it "someone else's data".
_IGNORABLE = {"lost+found", ".snapshot"}


@dataclass(frozen=True, slots=True)
class StoreLayout:
    """Paths of one store. Creating it touches nothing; ``init`` creates the tree."""

    root: Path

    @property
    def marker(self) -> Path:
        return self.root / MARKER_NAME

    @property
    def market_data(self) -> Path:
        return self.root / "market_data"

    @property
    def ohlcv(self) -> Path:
        return self.market_data / "ohlcv"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def checkpoints(self) -> Path:
        return self.models / "checkpoints"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def backtests(self) -> Path:
        return self.results / "backtests"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def series_dir(self, symbol: str, timeframe: str) -> Path:
        return self.ohlcv / validate_name("symbol", symbol) / validate_name("timeframe", timeframe)

    # lifecycle -------------------------------------------------------------------------------

    def init(self) -> bool:
        """Create the tree and the marker; idempotent. True if this call created the marker."""
        forget_tree(self.root)
        for sub in _TREE:
            ensure_dir(self.root / sub)
        marker = {
            "format": FORMAT_VERSION,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "created_by": f"efsray {__version__}",
        }
        try:
            create_exclusive(self.marker, json.dumps(marker, indent=2).encode() + b"\n")
        except FileExistsError:
            self.check()
            return False
        return True

    def check(self) -> dict[str, Any]:
        """Read the marker; StoreFormatError if absent, damaged or from a newer format."""
        try:
            raw = read_bytes(self.marker)
        except FileNotFoundError:
            raise StoreFormatError(
                f"{self.root} is not an efsray store (no {MARKER_NAME}); "
                f"run `efsray init --root {self.root}` to create one there"
            ) from None
        try:
            marker = json.loads(raw)
            fmt = int(marker["format"])
        except (ValueError, KeyError, TypeError):
            raise StoreFormatError(
                f"{self.marker} is damaged; restore it, or remove it and run `efsray init`"
            ) from None
        if fmt > FORMAT_VERSION:
            raise StoreFormatError(
                f"{self.root} uses store format {fmt}, newer than this efsray "
                f"({__version__}) understands ({FORMAT_VERSION}); upgrade efsray"
            )
        return dict(marker)

    def open(self, *, create: bool) -> None:
        """Check the store; with ``create``, initialize a missing or empty directory.

        A non-empty directory without a marker is refused even with ``create``: it may be
        someone else's data, and ``efsray init`` adopts it explicitly.
        """
        if kind_of(self.marker) is not None:
            self.check()
            return
        if not create:
            self.check()  # raises the "not an efsray store" error
        entries = set(list_dir(self.root)) - _IGNORABLE
        # Our own top-level directories without a marker: another process is initializing.
        ours = {sub.split("/")[0] for sub in _TREE}
        if {name for name in entries if name not in ours and not name.startswith(".efsray-tmp.")}:
            raise StoreFormatError(
                f"{self.root} is not empty and is not an efsray store (no {MARKER_NAME}); "
                f"run `efsray init --root {self.root}` to adopt it, or choose an empty directory"
            )
        self.init()
