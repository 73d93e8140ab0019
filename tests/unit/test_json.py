"""What the database can store: the one check step results go through before recording."""

from __future__ import annotations

import pytest

from treadle.engine.json import JSON, storable_text, unstorable


@pytest.mark.parametrize(
    "value",
    ["a\x00b", ["ok", {"k": "x\ud800"}], {"\udfff": 1}, {"deep": [[[{"v": "\x00"}]]]}],
)
def test_nul_and_lone_surrogates_anywhere_are_unstorable(value: JSON) -> None:
    problem = unstorable(value)
    assert problem is not None
    assert "NUL" in problem or "surrogate" in problem


def test_ordinary_json_is_storable() -> None:
    assert unstorable({"emoji": "\U0001f600", "n": [1, 2.5, None, True], "é": "ü"}) is None


def test_storable_text_replaces_what_cannot_be_stored() -> None:
    assert storable_text("a\x00b\ud800c") == "a\ufffdb\ufffdc"
