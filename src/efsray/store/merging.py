"""Which segments to merge, and the segment files a write has produced so far.

Merge policy (pure functions of row counts, so they are easy to test):
- *tiered* (what every ``append`` does): a segment's tier is ``floor(log_F(rows))``; when
  ``F`` (the merge factor) neighbouring segments share a tier and fit in ``max_rows``, they
  are merged. Each row is rewritten about ``log_F(max_rows / batch_rows)`` times in its life,
  and a series holds O(F log n) segments, so full reads open few files.
- *greedy* (``compact``): merge the longest runs of neighbours that fit in ``max_rows``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path

from efsray.errors import StorageError
from efsray.store.nfs import BackgroundSyncs, kind_of, remove_file
from efsray.store.segments import Segment

__all__ = ["PendingSegments", "find_run", "tier"]

log = logging.getLogger("efsray.store")

# A segment written but not committed for this long is re-checked before it is committed, in
# case cleanup (whose grace period is far longer) took it for debris of a crashed writer.
RECHECK_AFTER_S = 60.0


def tier(rows: int, merge_factor: int) -> int:
    return int(math.log(max(rows, 1), merge_factor))


def find_run(
    rows: Sequence[int], *, merge_factor: int, max_rows: int, tiered: bool
) -> tuple[int, int] | None:
    """``(start, stop)`` of the first run of segments to merge, or None."""
    if tiered:
        f = merge_factor
        for start in range(len(rows) - f + 1):
            group = rows[start : start + f]
            level = tier(group[0], f)
            if all(tier(r, f) == level for r in group) and sum(group) <= max_rows:
                return start, start + f
        return None
    start = 0
    while start < len(rows):
        total, stop = 0, start
        while stop < len(rows) and total + rows[stop] <= max_rows:
            total += rows[stop]
            stop += 1
        if stop - start > 1:
            return start, stop
        start = max(stop, start + 1)
    return None


class PendingSegments:
    """Segment files one write call has written, reusable across its commit attempts.

    Keyed by what they were computed from (the files they replace), so that when another
    writer commits first and the change is rebuilt, work whose inputs did not change is not
    redone. Files that end up in no committed manifest are deleted at the end. ``syncs``
    makes the files durable in the background; wait for it before publishing them.
    """

    def __init__(self) -> None:
        self._written: dict[Hashable, tuple[list[Segment], int, float]] = {}
        self.syncs = BackgroundSyncs()

    def get(self, key: Hashable, directory: Path) -> tuple[list[Segment], int] | None:
        hit = self._written.get(key)
        if hit is None:
            return None
        segments, replaced, when = hit
        if time.monotonic() - when > RECHECK_AFTER_S and not all(
            kind_of(directory / s.file) is not None for s in segments
        ):
            del self._written[key]
            return None
        return segments, replaced

    def put(self, key: Hashable, segments: list[Segment], replaced: int) -> None:
        self._written[key] = (segments, replaced, time.monotonic())

    def missing(self, directory: Path, segments: Iterable[Segment]) -> list[str]:
        """Files of ``segments`` that this write produced and that no longer exist: the last
        look before its commit, in case a cleanup run with a grace period shorter than the
        write took (``--force``) removed them."""
        ours = {seg.file for written, _, _ in self._written.values() for seg in written}
        return [s.file for s in segments if s.file in ours and kind_of(directory / s.file) is None]

    def discard_unused(self, directory: Path, used: Iterable[str]) -> None:
        keep = set(used)
        for segments, _, _ in self._written.values():
            for seg in segments:
                if seg.file not in keep:
                    try:
                        remove_file(directory / seg.file)
                    except StorageError as exc:
                        log.debug("leaving unused segment %s to cleanup: %s", seg.file, exc)
