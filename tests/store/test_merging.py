from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.store.merging import find_run, tier


def merge_all(rows: list[int], **kw) -> list[int]:
    rows = list(rows)
    while (run := find_run(rows, **kw)) is not None:
        start, stop = run
        rows[start:stop] = [sum(rows[start:stop])]
    return rows


def test_tiers() -> None:
    assert [tier(r, 8) for r in (1, 7, 8, 63, 64, 5000, 40_000)] == [0, 0, 1, 1, 2, 4, 5]


def test_appends_stay_logarithmic() -> None:
    rows: list[int] = []
    for _ in range(200):
        rows = merge_all([*rows, 5000], merge_factor=8, max_rows=2**21, tiered=True)
    assert sum(rows) == 1_000_000
    assert len(rows) <= 8 * 3


@given(
    st.lists(st.integers(1, 5000), max_size=60),
    st.integers(2, 10),
    st.integers(1, 20_000),
    st.booleans(),
)
def test_merging_keeps_rows_and_respects_the_cap(rows, factor, cap, tiered) -> None:
    merged = merge_all(rows, merge_factor=factor, max_rows=cap, tiered=tiered)
    assert sum(merged) == sum(rows)
    assert len(merged) <= len(rows)
    # a merge never builds a segment above the cap out of segments that were below it
    assert all(m <= cap or m in rows for m in merged)
    if not tiered:  # compaction leaves no two neighbours that would fit together
        assert all(a + b > cap for a, b in itertools.pairwise(merged))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=10**9), min_size=1, max_size=60),
    st.integers(min_value=1, max_value=16),
)
def test_reader_groups_cover_every_segment_once_in_order(sizes: list[int], n: int) -> None:
    from efsray.store.segments import Segment, _balanced

    segments = [Segment(f"s{i}", 1, b, i, i) for i, b in enumerate(sizes)]
    groups = _balanced(segments, n)
    assert 1 <= len(groups) <= n and all(groups)
    assert [k for g in groups for k in g] == list(range(len(sizes)))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(1, 50), min_size=1, max_size=40),
    st.integers(2, 5),
    st.integers(10, 400),
    st.integers(0, 40),
)
def test_moves_map_every_merged_segment_to_its_rows_in_the_committed_one(
    rows: list[int], factor: int, cap: int, base_count: int
) -> None:
    """Merges in one commit, merges of merges included: each segment of the base that went
    into a merge maps to the committed segment holding its rows, at its first row there."""
    from efsray.store.segment_moves import Moves
    from efsray.store.segments import Segment

    segments = [Segment(f"s{i}", r, 1, i, i) for i, r in enumerate(rows)]
    base = segments[: min(base_count, len(segments))]  # the rest: this commit's own
    moves, current, made = Moves(), list(segments), 0
    while (run := find_run([s.rows for s in current], merge_factor=factor, max_rows=cap,
                           tiered=True)) is not None:  # fmt: skip
        start, stop = run
        group = current[start:stop]
        made += 1
        merged = Segment(f"m{made}", sum(s.rows for s in group), 1, group[0].ts_min,
                         group[-1].ts_max)  # fmt: skip
        moves.merged(group, [merged])
        current[start:stop] = [merged]
    found = {s.file: (t.file, off) for t, inputs in moves.redirects(base, current)
             for s, off in inputs}  # fmt: skip
    committed = {s.file for s in current}
    for seg in base:
        if seg.file in committed:
            assert seg.file not in found
            continue
        target = next(t for t in current if t.ts_min <= seg.ts_min <= t.ts_max)
        first = sum(s.rows for s in segments if target.ts_min <= s.ts_min < seg.ts_min)
        assert found[seg.file] == (target.file, first)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_damage_to_a_redirect_is_corruption(tmp_path_factory, data) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from efsray.errors import CorruptionError
    from efsray.store.segment_moves import moved_name, read_move, redirect_record
    from efsray.store.segments import Segment

    directory = tmp_path_factory.mktemp("moved")
    target = Segment("seg-m.parquet", 30, 100, 0, 29, ("0" * 16,))
    inputs = [(Segment("seg-a.parquet", 10, 40, 0, 9), 0),
              (Segment("seg-b.parquet", 20, 60, 10, 29), 10)]  # fmt: skip
    raw = redirect_record(target, inputs)
    path = directory / moved_name("seg-b.parquet")
    path.write_bytes(raw)
    assert read_move(directory, inputs[1][0]) is not None
    at = data.draw(st.integers(0, len(raw) - 1))
    bit = data.draw(st.integers(0, 7))
    damaged = bytearray(raw)
    damaged[at] ^= 1 << bit
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptionError, match="redirect"):
        read_move(directory, inputs[1][0])
