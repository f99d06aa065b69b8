"""Property tests for the validators: JSON-safe metadata, metrics, filters, run ids."""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efsray.errors import InvalidDataError, InvalidNameError
from efsray.store import jsonsafe, parse_where
from efsray.store.ids import id_time, is_id, new_id

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8).filter(lambda k: k != "$float"), inner, max_size=4)
    ),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_encode_round_trips_through_strict_json(value: Any) -> None:
    raw = jsonsafe.dumps(jsonsafe.encode(value))
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-standard token {c}"))
    assert _same(value, jsonsafe.loads(raw))


unsupported = st.sampled_from(
    [b"bytes", {1, 2}, object(), 1 + 2j, frozenset(), bytearray(b"x"), range(3), Ellipsis]
)


@settings(max_examples=200, deadline=None)
@given(json_values, unsupported, st.text(max_size=5))
def test_anything_unsupported_is_refused_with_a_clear_error(base: Any, bad: Any, key: str) -> None:
    value = {"ok": base, "nested": [{key: bad}]}
    with pytest.raises(InvalidDataError, match="cannot be stored as JSON"):
        jsonsafe.encode(value, "metadata")


@given(st.integers() | st.floats() | st.none() | st.tuples(st.integers()))
def test_non_string_keys_are_refused(key: Any) -> None:
    with pytest.raises(InvalidDataError, match="keys must be strings"):
        jsonsafe.encode({key: 1})


def test_conversions_and_limits() -> None:
    value = {"a": np.float32(0.5), "b": np.arange(3), "c": dt.datetime(2024, 1, 2, 3, 4),
             "d": (1, 2), "e": np.bool_(True)}  # fmt: skip
    assert jsonsafe.encode(value) == {"a": 0.5, "b": [0, 1, 2], "c": "2024-01-02T03:04:00",
                                      "d": [1, 2], "e": True}  # fmt: skip
    deep: Any = 1
    for _ in range(jsonsafe.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(InvalidDataError, match="nested more than"):
        jsonsafe.encode(deep)
    with pytest.raises(InvalidDataError, match="reserves"):
        jsonsafe.encode({"x": {"$float": "NaN"}})
    with pytest.raises(InvalidDataError):
        jsonsafe.encode(np.array(["a"]))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=10),
                       st.none() | st.integers() | st.floats(), max_size=6))  # fmt: skip
def test_metrics_accept_numbers_including_non_finite(metrics: dict[str, Any]) -> None:
    back = jsonsafe.loads(jsonsafe.dumps(jsonsafe.encode_metrics(metrics)))
    assert _same(metrics, back)


@given(st.text(max_size=10) | st.booleans() | st.lists(st.integers(), max_size=2))
def test_metrics_refuse_non_numbers(bad: Any) -> None:
    with pytest.raises(InvalidDataError, match="must be numbers"):
        jsonsafe.encode_metrics({"m": bad})


names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,15}", fullmatch=True)
ops = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
finite = st.floats(allow_nan=False, allow_infinity=False)


@given(names, ops, finite, st.sampled_from(["", " ", "  "]))
def test_parse_where_reads_what_it_should(name: str, op: str, value: float, pad: str) -> None:
    assert parse_where(f"{pad}{name}{pad}{op}{pad}{value!r}{pad}") == (name, op, value)


@given(st.text(max_size=30))
def test_parse_where_never_raises_anything_else(text: str) -> None:
    try:
        name, op, value = parse_where(text)
    except InvalidDataError:
        return
    assert op in ("<", "<=", ">", ">=", "==", "!=") and isinstance(value, float) and name


@given(st.floats(min_value=0, max_value=2**47 / 1000))
def test_ids_encode_their_time_and_sort_by_it(t: float) -> None:
    a = new_id(t)
    assert is_id(a) and len(a) == 26
    assert abs(id_time(a).timestamp() - t) < 0.002
    assert new_id(t)[:10] == a[:10]
    assert a[:10] < new_id(t + 0.002)[:10]


@given(st.text(max_size=30))
def test_id_parser_refuses_non_ids(text: str) -> None:
    if is_id(text):
        id_time(text)
    else:
        with pytest.raises(InvalidNameError):
            id_time(text)
