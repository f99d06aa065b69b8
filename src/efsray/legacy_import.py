"""Bring a tree written by the original plan's ``EFSDataManager`` into the store.

The plan wrote plain JSON and pickles on the shared volume::

    market_data/ohlcv/{symbol}_{timeframe}_{unix_ts}.json   one bar, a list of bars, or
                                                            a dict of columns
    models/checkpoints/{model_id}/model.pkl + metadata.json
    results/backtests/{strategy}_{unix_ts}.json

:func:`import_legacy` reads them through the store's public API: market snapshots are
appended oldest first (so, as in the plan's loader, the newest snapshot of a bar wins);
checkpoints are saved as opaque bytes with their metadata, NEVER unpickled; backtest files
become runs. It is idempotent (a second run imports nothing: bars already stored with the
same values, checkpoints whose bytes a version already holds, and runs whose derived id
exists are "already imported"), has a dry run, and reports every file it skipped and why.
The legacy tree is only read (it is not the store: it lives outside efsray.store, whose own
files are touched only through efsray.store.nfs).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from efsray.errors import EfsrayError, InvalidDataError, NotFoundError
from efsray.store.bars import normalize_bars
from efsray.store.ids import derive
from efsray.store.layout import MARKER_NAME
from efsray.store.manager import split_results
from efsray.store.names import validate_name

if TYPE_CHECKING:
    from efsray.store.store import Store

__all__ = ["MAX_JSON_BYTES", "LegacyItem", "LegacyReport", "import_legacy"]

MAX_JSON_BYTES = 256 << 20
"""A legacy JSON file larger than this is skipped (the plan never wrote one near it)."""

Kind = Literal["market", "checkpoint", "result"]
Action = Literal["imported", "would import", "already imported", "skipped"]

_MARKET = re.compile(r"(?P<symbol>.+)_(?P<timeframe>[^_]+)_(?P<ts>[0-9]{1,12})\.json")
_RESULT = re.compile(r"(?P<strategy>.+)_(?P<ts>[0-9]{1,12})\.json")
_SERIES_KEYS = ("symbol", "timeframe")  # labels the plan's callers often kept in a snapshot


@dataclass(frozen=True, slots=True)
class LegacyItem:
    """What happened to one legacy file (``source`` is relative to the legacy root)."""

    kind: Kind
    source: str
    action: Action
    target: str = ""
    reason: str = ""


@dataclass(slots=True)
class LegacyReport:
    root: str
    dry_run: bool
    items: list[LegacyItem] = field(default_factory=list)

    def count(self, action: Action, kind: Kind | None = None) -> int:
        return sum(1 for i in self.items if i.action == action and kind in (None, i.kind))

    @property
    def skipped(self) -> list[LegacyItem]:
        return [i for i in self.items if i.action == "skipped"]


def import_legacy(store: Store, root: str | Path, *, dry_run: bool = False) -> LegacyReport:
    """Import everything the plan's ``EFSDataManager`` wrote under ``root`` (see module)."""
    base = Path(root)
    if not base.is_dir():
        raise NotFoundError(f"legacy root {str(base)!r} is not a directory; pass the old mount")
    known = [base / "market_data" / "ohlcv", base / "models" / "checkpoints",
             base / "results" / "backtests"]  # fmt: skip
    if (base / MARKER_NAME).exists():
        raise InvalidDataError(
            f"{str(base)!r} is an efsray store already, not a tree of the original plan; "
            "nothing to import (point --root at it to use it)"
        )
    if not any(d.is_dir() for d in known):
        raise InvalidDataError(
            f"{str(base)!r} holds none of market_data/ohlcv, models/checkpoints or "
            "results/backtests: it is not a tree written by the original EFSDataManager"
        )
    report = LegacyReport(str(base), dry_run)
    for item in (*_markets(store, base, dry_run), *_checkpoints(store, base, dry_run),
                 *_results(store, base, dry_run)):  # fmt: skip
        report.items.append(item)
    return report


# --- market data ---------------------------------------------------------------------------


def _markets(store: Store, base: Path, dry_run: bool) -> Iterator[LegacyItem]:
    """One commit per series: its snapshots merged oldest first (the newest snapshot of a bar
    wins, as the plan's loader had it), compared with what is stored (idempotence)."""
    directory = base / "market_data" / "ohlcv"
    series: dict[tuple[str, str], list[tuple[int, str, Path]]] = {}
    for path in _files(directory):
        match = _MARKET.fullmatch(path.name)
        if match is None:
            why = "name is not {symbol}_{timeframe}_{unix_ts}.json"
            yield LegacyItem("market", str(path.relative_to(base)), "skipped", reason=why)
            continue
        key = (match["symbol"], match["timeframe"])
        series.setdefault(key, []).append((int(match["ts"]), path.name, path))
    for (symbol, timeframe), snapshots in sorted(series.items()):
        target = f"{symbol}/{timeframe}"
        tables, sources = [], []
        for _, _, path in sorted(snapshots):  # oldest first
            rel = str(path.relative_to(base))
            try:
                tables.append(normalize_bars(_bars_of(_read_json(path))))
                sources.append(rel)
            except (EfsrayError, OSError) as exc:
                yield LegacyItem("market", rel, "skipped", target, reason=str(exc))
        if not tables:
            continue
        try:
            bars = _newest_wins(tables)
            if _already_stored(store, symbol, timeframe, bars):
                action: Action = "already imported"
            elif dry_run:
                store.layout.series_dir(symbol, timeframe)  # names checked, nothing written
                action = "would import"
            else:
                target += f" v{store.market.append(symbol, timeframe, bars).version}"
                action = "imported"
            yield from (LegacyItem("market", rel, action, target) for rel in sources)
        except EfsrayError as exc:
            yield from (LegacyItem("market", rel, "skipped", target, str(exc)) for rel in sources)


def _newest_wins(tables: list[Any]) -> Any:
    """The union of normalized bar tables; a timestamp in several keeps the last table's bar."""
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    frame = frame.drop_duplicates("timestamp", keep="last")
    return normalize_bars(frame.reset_index(drop=True))


def _bars_of(data: Any) -> Any:
    """The plan saved whatever dict its caller passed: unwrap {"bars"|"data": [...]} and drop
    string labels (symbol, timeframe) that are not bar columns."""
    if isinstance(data, Mapping):
        for key in ("bars", "data", "ohlcv"):
            if isinstance(data.get(key), list | Mapping) and len(data) <= 3:
                return _bars_of(data[key])
        return {k: v for k, v in data.items() if not (k in _SERIES_KEYS and isinstance(v, str))}
    if isinstance(data, list):
        return [_bars_of(row) if isinstance(row, Mapping) else row for row in data]
    raise InvalidDataError(
        f"holds a JSON {type(data).__name__}, not bars (one bar, a list, or a dict of columns)"
    )


def _already_stored(store: Store, symbol: str, timeframe: str, bars: Any) -> bool:
    ts = bars.column("timestamp")
    try:
        stored = store.market.read(
            symbol, timeframe, start=ts[0].as_py(), end=ts[-1].as_py(), columns=bars.column_names
        )
    except (NotFoundError, InvalidDataError):
        return False
    if stored.num_rows < bars.num_rows:
        return False
    import pyarrow.compute as pc

    mask = pc.is_in(stored.column("timestamp"), value_set=ts)
    return bool(stored.filter(mask).select(bars.column_names).equals(bars))


# --- checkpoints ---------------------------------------------------------------------------


def _checkpoints(store: Store, base: Path, dry_run: bool) -> Iterator[LegacyItem]:
    directory = base / "models" / "checkpoints"
    if not directory.is_dir():
        return
    for model_dir in sorted(p for p in directory.iterdir()):
        rel = str(model_dir.relative_to(base))
        model = model_dir.name
        if not model_dir.is_dir():
            yield LegacyItem("checkpoint", rel, "skipped", reason="not a model directory")
            continue
        blob, meta_file = model_dir / "model.pkl", model_dir / "metadata.json"
        if not blob.is_file() or not meta_file.is_file():
            why = "needs both model.pkl and metadata.json (the plan's loader refuses it too)"
            yield LegacyItem("checkpoint", rel, "skipped", model, reason=why)
            continue
        try:
            metadata = _read_json(meta_file)
            if not isinstance(metadata, Mapping):
                raise InvalidDataError("metadata.json is not a JSON object")
            data = blob.read_bytes()  # opaque bytes: never unpickled
            digest = hashlib.sha256(data).hexdigest()
            done = _checkpoint_with(store, model, digest)
            if done is not None:
                yield LegacyItem("checkpoint", rel, "already imported", f"{model} v{done}")
                continue
            if dry_run:
                validate_name("model id", model)
                yield LegacyItem("checkpoint", rel, "would import", model)
                continue
            meta = dict(metadata)
            legacy = {"source": rel, "sha256": digest}
            for key in ("saved_at", "checkpoint_path"):  # the plan's own bookkeeping
                if key in meta:
                    legacy[key] = meta.pop(key)
            info = store.checkpoints.save(model, data, {**meta, "legacy": legacy})
            yield LegacyItem("checkpoint", rel, "imported", f"{model} v{info.version}")
        except OSError as exc:
            yield LegacyItem("checkpoint", rel, "skipped", model, reason=f"unreadable: {exc}")
        except EfsrayError as exc:
            yield LegacyItem("checkpoint", rel, "skipped", model, reason=str(exc))


def _checkpoint_with(store: Store, model: str, digest: str) -> int | None:
    try:
        versions = store.checkpoints.list(model)
    except NotFoundError:
        return None
    for info in versions:
        legacy = info.metadata.get("legacy")
        if isinstance(legacy, Mapping) and legacy.get("sha256") == digest:
            return info.version
    return None


# --- backtest results ----------------------------------------------------------------------


def _results(store: Store, base: Path, dry_run: bool) -> Iterator[LegacyItem]:
    for path in _files(base / "results" / "backtests"):
        rel = str(path.relative_to(base))
        match = _RESULT.fullmatch(path.name)
        if match is None:
            yield LegacyItem(
                "result", rel, "skipped", reason="name is not {strategy}_{unix_ts}.json"
            )
            continue
        strategy = match["strategy"]
        try:
            raw = path.read_bytes()
            results = _read_json(path)
            if not isinstance(results, Mapping):
                raise InvalidDataError("is not a JSON object of results")
            when = dt.datetime.fromtimestamp(int(match["ts"]), dt.UTC)
            run_id = derive(when, hashlib.sha256(raw).digest())
            kwargs = split_results(results)
            kwargs["tags"] = {**kwargs.get("tags", {}), "legacy_source": rel}
            if run_id in store.results.existing(strategy, [run_id]):
                yield LegacyItem("result", rel, "already imported", f"{strategy}/{run_id}")
            elif dry_run:
                yield LegacyItem("result", rel, "would import", f"{strategy}/{run_id}")
            else:
                info = store.results.save(strategy, run_id=run_id, **kwargs)
                yield LegacyItem("result", rel, "imported", f"{strategy}/{info.run_id}")
        except OSError as exc:
            yield LegacyItem("result", rel, "skipped", strategy, reason=f"unreadable: {exc}")
        except EfsrayError as exc:
            yield LegacyItem("result", rel, "skipped", strategy, reason=str(exc))


# --- helpers -------------------------------------------------------------------------------


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))


def _read_json(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InvalidDataError(f"is {size} bytes, over the {MAX_JSON_BYTES} that are read")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidDataError(f"is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidDataError(f"is not valid JSON: {exc.msg} at line {exc.lineno}") from None
