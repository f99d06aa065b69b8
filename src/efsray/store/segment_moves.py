"""Merged-away segments: where their rows are now.

A merge writes one new segment M holding the rows of neighbouring segments a, b, c, in order.
Older versions still name a, b and c, so until now they stayed on disk until retention's
grace period had passed: about twice the bytes of the series, at any time, for a series that
is being appended to. Instead, once the merge's version is committed, its writer (the winner
of the commit, never a loser) links one small record under each input's name,
``<input>.moved`` (:func:`efsray.store.nfs.link_all`: each name appears complete or not at
all), then removes the inputs:

    {"checksum":"xxh3-64:...","format":1,"kind":"moved","target":{M's manifest entry},
     "inputs":[{"file":"seg-a...","rows":..,"offset":0,"ts_min":..,"ts_max":..}, ...]}

A reader of an older version that finds a segment missing reads its redirect (checksummed
like a manifest), checks that it describes that segment (rows, time range), and reads that
row slice of M, verified by the block checksums of M's entry; if M was merged away in turn,
it follows M's redirect (a chain, bounded by ``MAX_HOPS``). A segment missing with no
redirect stays what it was: a missing file (a CorruptionError or VersionNotFoundError to the
caller). Killed at any instant, the writer leaves at worst inputs that are not removed, or a
redirect beside an input that still exists: garbage that retention removes as before.
Retention keeps a redirect while a kept version names its input (or reaches it through a
chain), and the segments redirects lead to.

Only merges whose output is one segment made of whole inputs are recorded (tiered merges and
``compact``); a back-fill rewrites rows (its inputs' rows are not a slice of its output), and
``write`` replaces the series: their old segments stay until retention, as before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from efsray.errors import CorruptionError, EfsrayError
from efsray.store.nfs import (
    IMMUTABLE_MODE,
    checksum_problem,
    checksummed_json,
    link_all,
    read_bytes,
    remove_file,
)
from efsray.store.segment_format import Segment, is_segment_name

__all__ = [
    "MAX_HOPS",
    "MOVED_SUFFIX",
    "Move",
    "Moves",
    "free_merged",
    "is_moved_name",
    "moved_name",
    "moved_source",
    "read_move",
    "redirect_record",
]

log = logging.getLogger("efsray.store")

MOVED_SUFFIX = ".moved"
MAX_HOPS = 64  # a chain longer than this is a cycle: a damaged store


def moved_name(file: str) -> str:
    """The name of the redirect of segment ``file``."""
    return file + MOVED_SUFFIX


def is_moved_name(name: str) -> bool:
    """True for the name of a segment's redirect."""
    return name.endswith(MOVED_SUFFIX) and is_segment_name(name[: -len(MOVED_SUFFIX)])


def moved_source(name: str) -> str:
    """The segment a redirect's name is for."""
    return name[: -len(MOVED_SUFFIX)]


@dataclass(frozen=True, slots=True)
class Move:
    """Where the rows of a merged-away segment are: ``target``'s rows from ``offset`` on."""

    target: Segment
    offset: int


def redirect_record(target: Segment, inputs: Sequence[tuple[Segment, int]]) -> bytes:
    """The bytes of the redirect of ``inputs`` (each with its first row in ``target``)."""
    return checksummed_json(
        {
            "format": 1,
            "kind": "moved",
            "target": target.to_json(),
            "inputs": [
                dict(file=s.file, rows=s.rows, offset=offset, ts_min=s.ts_min, ts_max=s.ts_max)
                for s, offset in inputs
            ],
        }
    )


def read_move(directory: Path, seg: Segment) -> Move | None:
    """Where the rows of ``seg`` (missing from ``directory``) went, from its redirect; None
    when it has none. A redirect that is damaged or does not describe ``seg`` exactly is a
    CorruptionError naming it."""
    path = directory / moved_name(seg.file)
    try:
        raw = read_bytes(path)
    except FileNotFoundError:
        return None
    problem = checksum_problem(raw)
    if problem is not None:
        raise _damaged(path, problem)
    try:
        record = json.loads(raw)
        target = Segment.from_json(record["target"])
        (entry,) = [e for e in record["inputs"] if e.get("file") == seg.file]
        offset = int(entry["offset"])
        described = (int(entry["rows"]), int(entry["ts_min"]), int(entry["ts_max"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _damaged(path, f"it does not describe {seg.file}: {exc!r}") from None
    if not is_segment_name(target.file) or "/" in target.file:  # it becomes a path
        raise _damaged(path, f"its target {target.file!r} is not a segment's name")
    if described != (seg.rows, seg.ts_min, seg.ts_max):
        raise _damaged(
            path, f"it describes {seg.file} as rows, ts_min, ts_max {described}, the manifest "
            f"as {(seg.rows, seg.ts_min, seg.ts_max)}"
        )  # fmt: skip
    if offset < 0 or offset + seg.rows > target.rows:
        raise _damaged(path, f"rows {offset}-{offset + seg.rows} are not in {target.file}")
    return Move(target, offset)


def _damaged(path: Path, what: str) -> CorruptionError:
    return CorruptionError(
        f"redirect {path} of a merged segment was damaged after it was written ({what}); "
        "restore it from a backup, or read the latest version"
    )


class Moves:
    """The merges of one commit attempt: which segments went into which new one, where."""

    def __init__(self) -> None:
        self._moved: dict[str, tuple[Segment, str, int]] = {}

    def merged(self, inputs: Sequence[Segment], outputs: Sequence[Segment]) -> None:
        """``outputs`` were written from ``inputs``' rows, in order. Recorded only when they
        are one segment (a merge never splits: its runs fit in max_segment_rows)."""
        if len(outputs) != 1:
            return
        offset = 0
        for seg in inputs:
            self._moved[seg.file] = (seg, outputs[0].file, offset)
            offset += seg.rows

    def redirects(
        self, base: Iterable[Segment], committed: Iterable[Segment]
    ) -> list[tuple[Segment, list[tuple[Segment, int]]]]:
        """For each segment of ``committed`` (a version's) that holds rows of segments of
        ``base`` (the version before), the base's segments and their first rows in it. A
        merge's output merged again in the same commit is followed to the final segment."""
        final = {s.file: s for s in committed}
        grouped: dict[str, list[tuple[Segment, int]]] = {}
        for seg in base:
            if seg.file not in self._moved or seg.file in final:
                continue
            _, target, offset = self._moved[seg.file]
            while target not in final and target in self._moved:
                _, target, more = self._moved[target]
                offset += more
            if target in final:
                grouped.setdefault(target, []).append((seg, offset))
        return [(final[t], inputs) for t, inputs in grouped.items()]


def free_merged(directory: Path, redirects: list[tuple[Segment, list[tuple[Segment, int]]]]) -> int:
    """Link the redirects of a committed merge and then remove its inputs; the number of
    inputs removed. Best effort: the commit has happened, so an error (a full disk, a lost
    mount) is logged and what is left is garbage for retention."""
    removed = 0
    for target, inputs in redirects:
        try:
            linked = link_all(
                [directory / moved_name(s.file) for s, _ in inputs],
                redirect_record(target, inputs),
                mode=IMMUTABLE_MODE,
            )
            for path in linked:  # a name that existed already is not ours to trust
                removed += remove_file(directory / moved_source(path.name))
        except EfsrayError as exc:
            log.warning("left merged segments of %s in %s to retention: %s", target.file,
                        directory, exc)  # fmt: skip
    return removed
