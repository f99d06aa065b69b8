"""The files of the legacy one-file-per-run layout (:mod:`efsray.store.results.legacy`):
reading a run's JSON and its tables (size and digest verified), turning records into rows
and infos, and removing runs and empty time directories for retention."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from efsray.errors import CorruptionError, NotFoundError, StorageError
from efsray.store import jsonsafe
from efsray.store.hashing import check, split_digest
from efsray.store.ids import is_id
from efsray.store.nfs import list_dir, read_bytes, remove_empty_dir, remove_file, stat_or_none
from efsray.store.results.records import RunInfo
from efsray.store.results.records import digest as _digest

log = logging.getLogger("efsray.store")

_READ_WORKERS = 16
_SLOW_CALL_S = 200e-6  # a lookup slower than this is a network round trip: use threads


def _listdir(path: Path) -> list[str]:
    return sorted(list_dir(path))


def _decode_table(path: Path, run_id: str, name: str, entry: Mapping[str, Any], data: bytes) -> Any:
    """An Arrow table from a stored table's (verified) bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = entry.get("format", "parquet")
    try:
        if kind == "arrow-ipc":
            return pa.ipc.open_stream(data).read_all()
        if kind == "parquet":
            return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise CorruptionError(
            f"table {name!r} of run {run_id} ({_table_where(path, entry)}) is unreadable: {exc}"
        ) from None
    raise CorruptionError(
        f"table {name!r} of run {run_id} ({_table_where(path, entry)}) has an unknown format "
        f"{kind!r}; a newer efsray wrote it: upgrade"
    )


def _table_where(path: Path, entry: Mapping[str, Any]) -> str:
    if "inline" in entry:
        return f"embedded in {path}"
    return str(path.parent / str(entry.get("file")))


def _table_bytes(path: Path, run_id: str, name: str, entry: Mapping[str, Any]) -> bytes:
    """A stored table's bytes (embedded or a file), size and digest verified."""
    what = f"table {name!r} of run {run_id}"
    where = _table_where(path, entry)
    try:
        if "inline" in entry:
            data = base64.b64decode(str(entry["inline"]), validate=True)
        else:
            data = read_bytes(path.parent / str(entry["file"]))
        size, digest = int(entry["bytes"]), str(entry["digest"])
    except (binascii.Error, KeyError, TypeError, ValueError) as exc:
        raise CorruptionError(f"{what} ({where}) is damaged: {exc}") from None
    except FileNotFoundError:
        raise CorruptionError(
            f"{what} is missing: {where} was removed; restore it from a backup"
        ) from None
    algorithm, _ = split_digest(digest)
    check(what, Path(where) if "inline" not in entry else path, size, digest, len(data),
          _digest(data, algorithm))  # fmt: skip
    return data


def _map(func: Callable[[Any], Any], items: list[Any]) -> list[Any]:
    """``func`` over ``items``: each call is a lookup or a read, a round trip on EFS, so
    when the first call shows that the filesystem answers slowly the rest run on up to
    _READ_WORKERS threads (which overlap the waits); on a local disk threads cost more
    than the calls."""
    if not items:
        return []
    started = time.perf_counter()
    first = func(items[0])
    rest = items[1:]
    if len(rest) <= 3 or time.perf_counter() - started < _SLOW_CALL_S:
        return [first, *(func(i) for i in rest)]
    with ThreadPoolExecutor(min(_READ_WORKERS, len(rest))) as pool:
        return [first, *pool.map(func, rest)]


def _stat(path: Path) -> os.stat_result | None:
    return stat_or_none(path)


def _unlink(path: Path) -> bool:
    return remove_file(path)


def _unlink_all(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            remove_file(path)
        except StorageError as exc:
            log.warning("could not remove %s (cleanup will): %s", path, exc)


def _read_record(path: Path) -> dict[str, Any]:
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        raise NotFoundError(
            f"no run {path.stem} in {path.parent} (removed by retention, or never saved)"
        ) from None
    try:
        record = jsonsafe.loads(raw)
    except ValueError as exc:
        raise CorruptionError(
            f"run file {path} is not valid JSON ({exc}); restore it from a backup"
        ) from None
    if not isinstance(record, dict) or not is_id(record.get("run_id")):
        raise CorruptionError(f"run file {path} is not an efsray run")
    return record


def _read_info(path: Path) -> RunInfo:
    return _run_info(jsonsafe.decode(_read_record(path)), path)


def _run_info(record: dict[str, Any], path: Path) -> RunInfo:
    record = jsonsafe.decode(record)
    writer = record.get("writer") or {}
    return RunInfo(
        run_id=record["run_id"],
        strategy=record["strategy"],
        created_at=dt.datetime.fromisoformat(record["created_at"]),
        path=str(path),
        metrics=dict(record.get("metrics") or {}),
        params=dict(record.get("params") or {}),
        data_versions=dict(record.get("data_versions") or {}),
        tags=dict(record.get("tags") or {}),
        extra=dict(record.get("extra") or {}),
        tables=tuple(sorted(record.get("tables") or {})),
        writer=f"{writer.get('host', '?')}:{writer.get('pid', '?')}",
    )


def _read_many(paths: list[Path]) -> list[dict[str, Any]]:
    def one(path: Path) -> dict[str, Any] | None:
        try:
            return _read_record(path)
        except NotFoundError:
            return None  # removed by retention between the listing and the read
        except CorruptionError as exc:
            log.warning("skipping damaged run file: %s", exc)
            return None

    return [r for r in _map(one, paths) if r is not None]


def _row(record: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    writer = record.get("writer") or {}
    row: dict[str, Any] = {
        "run_id": record["run_id"],
        "strategy": record.get("strategy"),
        "created_at": record.get("created_at"),
        "writer": f"{writer.get('host', '?')}:{writer.get('pid', '?')}",
    }
    for name, value in metrics.items():
        row[f"metrics.{name}"] = math.nan if value is None else value
    for prefix in ("params", "tags"):
        for name, value in jsonsafe.decode(record.get(prefix) or {}).items():
            row[f"{prefix}.{name}"] = (
                value if not isinstance(value, dict | list) else jsonsafe.dumps(value).decode()
            )
    row["data_versions"] = ",".join(
        f"{k}@{v}" for k, v in sorted((record.get("data_versions") or {}).items())
    )
    row["tables"] = ",".join(sorted(record.get("tables") or {}))
    return row


def _remove_run(directory: Path, run_id: str, tables: list[str], dry_run: bool) -> tuple[int, int]:
    """Remove a run: its JSON first (the run is gone), then its table files."""
    files = nbytes = 0
    for name in [f"{run_id}.json", *tables]:
        st = _stat(directory / name)
        if st is None:
            continue
        size = st.st_size
        if dry_run or _unlink(directory / name):
            files += 1
            nbytes += size
    return files, nbytes


def _named_files(path: Path) -> set[str] | None:
    """The table files a run's JSON names (None if it cannot be read: keep everything)."""
    try:
        record = _read_record(path)
    except (NotFoundError, CorruptionError) as exc:
        log.warning("not removing table files of %s: %s", path, exc)
        return None
    return {str(e["file"]) for e in (record.get("tables") or {}).values() if "file" in e}


def _remove_empty_dirs(base: Path, cutoff: float) -> None:
    """Remove empty minute and day directories whose time is before ``cutoff``."""
    for day in _listdir(base):
        for minute in _listdir(base / day):
            try:
                when = dt.datetime.strptime(f"{day} {minute}", "%Y-%m-%d %H%M").replace(
                    tzinfo=dt.UTC
                )
            except ValueError:
                continue
            if when.timestamp() + 60 < cutoff:
                _rmdir_quietly(base / day / minute)
        try:
            day_start = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            continue
        if day_start.timestamp() + 86400 < cutoff:
            _rmdir_quietly(base / day)


def _rmdir_quietly(path: Path) -> None:
    remove_empty_dir(path)
