"""Two clients of one store: one writes, the other reads through its own mount (its own
attribute, lookup and negative-lookup caches).

What must hold whatever the caches: the other client only ever sees complete committed
versions, never goes backwards, and sees the newest commit once its caches expire (polled
with a deadline). How long that takes is the backend's to report (printed), not to assert.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from efsray.errors import NotFoundError
from tests._wait import wait_for
from tests.conformance.site import Site, case
from tests.store import _ckpt_workers as w
from tests.store._bars import batch, batch_ids

T = TypeVar("T")
CONVERGE_WITHIN = 30.0  # seconds: far above simfs's 3 s cache; EFS's acdirmax is 60 s


def _poll(what: str, check: Callable[[], T | None], deadline: float) -> tuple[T, float]:
    """``check()``'s first value that is not None, and how long it took to come."""
    started = time.monotonic()
    (value,) = wait_for(what, lambda: None if (v := check()) is None else (v,), timeout=deadline)
    return value, time.monotonic() - started


@case("clients", needs=("two_clients",))
def the_other_client_sees_only_complete_versions_and_converges(site: Site) -> None:
    writer = site.store()
    seen = 0
    for i in range(6):
        committed = writer.market.append("SPY", "1m", batch(i)).version
        try:
            reader = site.peer_store()
            info = reader.market.info("SPY", "1m")
            table = reader.market.read("SPY", "1m", version=info.version)
        except NotFoundError as exc:
            assert seen == 0, f"after version {seen}, the other client got {exc!r}"
            continue
        assert seen <= info.version <= committed, (seen, info.version, committed)
        assert table.num_rows == 100 * info.version  # batch i adds 100 new rows
        assert sorted(set(batch_ids(table))) == list(range(info.version))
        seen = info.version

    def newest() -> int | None:
        v = site.peer_store().market.info("SPY", "1m").version
        return v if v == 6 else None

    _, lag = _poll("version 6 on the other client", newest, CONVERGE_WITHIN)
    assert site.peer_store().market.tail("SPY", "1m", 150).num_rows == 150
    print(f"{site.name}: the other client saw the last commit after {lag:.2f} s")


@case("clients", needs=("two_clients",))
def checkpoints_and_aliases_reach_the_other_client(site: Site) -> None:
    writer = site.store().checkpoints
    seen = 0
    for i in range(4):
        seed = f"x{i}"
        writer.save(w.MODEL, w.payload(seed, 10_000), {"seed": seed, "size": 10_000})
        latest = site.peer_store().checkpoints.latest_version(w.MODEL)
        assert seen <= (latest or 0) <= i + 1, (seen, latest, i + 1)
        if latest is not None:  # whatever it finds loads, verifies and is what was saved
            data, info = site.peer_store().checkpoints.load_bytes(w.MODEL, latest)
            assert data == w.expected_content(info.metadata)
            seen = latest
    writer.set_alias(w.MODEL, "production", 3)

    def aliased() -> bytes | None:
        try:
            data, info = site.peer_store().checkpoints.load_bytes(w.MODEL, alias="production")
        except NotFoundError:
            return None
        return data if info.version == 3 else None

    data, lag = _poll("the alias on the other client", aliased, CONVERGE_WITHIN)
    assert data == w.payload("x2", 10_000)

    def listed() -> list[int] | None:
        # The alias lives in another log: a version this client probed before it existed
        # may still hide behind the negative lookup that probe left (2 or 4 here), until
        # the cache expires. What is listed loads, in order, from version 1 (seen first).
        found = [i.version for i in site.peer_store().checkpoints.list(w.MODEL)]
        assert found == sorted(set(found)) and set(found) <= {1, 2, 3, 4}, found
        assert found[:1] == [1], found
        return found if found == [1, 2, 3, 4] else None

    _, list_lag = _poll("4 versions listed on the other client", listed, CONVERGE_WITHIN)
    print(f"{site.name}: the other client saw the alias after {lag:.2f} s, 4 versions after "
          f"{lag + list_lag:.2f} s")  # fmt: skip


@case("clients", needs=("two_clients",))
def results_saved_on_one_client_are_found_on_the_other(site: Site) -> None:
    ids = [site.store().results.save("s", metrics={"i": i}).run_id for i in range(5)]

    def all_runs() -> list[str] | None:
        found = sorted(site.peer_store().results.query("s")["run_id"])
        return found if found == sorted(ids) else None

    _, lag = _poll("5 runs on the other client", all_runs, CONVERGE_WITHIN)
    assert site.peer_store().results.load(ids[2]).info.metrics == {"i": 2}
    print(f"{site.name}: the other client listed every run after {lag:.2f} s")


@case("clients", needs=("two_clients",))
def old_versions_read_on_the_other_client_after_merges_removed_their_segments(
    site: Site,
) -> None:
    """The other client reads version 1 (its caches now know version 1's segment), then the
    writer's merges remove that segment; a new reader there still reads version 1 exactly, by
    the segment's redirect, whatever its caches say about the removed file (a positive entry:
    ENOENT or ESTALE on open, retried by name)."""
    writer = site.store(merge_factor=2)
    writer.market.append("SPY", "1m", batch(0))
    first = writer.market.read("SPY", "1m", version=1)

    def v1() -> bool | None:
        try:
            return site.peer_store().market.read("SPY", "1m", version=1).equals(first) or None
        except NotFoundError:
            return None  # the other client's caches do not show the series yet

    _poll("version 1 on the other client", v1, CONVERGE_WITHIN)
    for i in range(1, 8):  # every other append merges; version 1's segment is merged away
        writer.market.append("SPY", "1m", batch(i))
    reader = site.peer_store()
    assert reader.market.read("SPY", "1m", version=1).equals(first)
    assert reader.market.tail("SPY", "1m", 10, version=1).equals(first.slice(90))
    assert sorted(set(batch_ids(reader.market.read("SPY", "1m", version=4)))) == [0, 1, 2, 3]
