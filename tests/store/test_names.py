from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from efsray.errors import InvalidNameError
from efsray.store import validate_name


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "..",
        ".",
        "a/b",
        "a\\b",
        "",
        "\x00",
        "AAPL\x00",
        "x" * 300,
        "x" * 129,
        ".hidden",
        "-rf",
        "a b",
        "sym\n",
        "é",
        "a:b",
        "/abs",
        "~root",
        "a*",
        "$HOME",
    ],
)
def test_bad_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidNameError) as info:
        validate_name("symbol", bad)
    assert "symbol" in str(info.value)


def test_long_name_message_is_truncated() -> None:
    with pytest.raises(InvalidNameError, match=r"300 characters"):
        validate_name("symbol", "x" * 300)


@pytest.mark.parametrize("good", ["AAPL", "BRK.B", "^GSPC", "EUR=X", "ES-2024", "1m", "btc_usd"])
def test_good_names_pass(good: str) -> None:
    assert validate_name("symbol", good) == good


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidNameError, match="must be a string"):
        validate_name("symbol", 42)


@given(st.text(max_size=140))
def test_accepted_names_stay_one_component_inside_the_root(name: str) -> None:
    try:
        validate_name("symbol", name)
    except InvalidNameError:
        return
    root = Path("/store/root")
    joined = root / name
    assert joined.parent == root
    assert os.path.normpath(joined) == str(joined)
    assert not name.startswith((".", "-"))
