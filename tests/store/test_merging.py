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
