"""The strict JSON check every adapter shares: what PostgreSQL and our answers cannot hold."""

from __future__ import annotations

import pytest

from treadle import jsoncheck
from treadle.errors import ValidationError


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"a": [1, {"b": "x\\u0000"}]}', "a.1.b"),
        (b'{"a": "\\ud800"}', "a"),
        (b'{"a": "\\udfff tail"}', "a"),
        (b'{"k\\u0000": 1}', "body"),
        (b'"\\u0000"', "body"),
    ],
)
def test_text_the_database_cannot_hold_names_its_field(raw: bytes, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        jsoncheck.loads(raw)
    assert list(caught.value.fields) == [field]


@pytest.mark.parametrize(
    "raw",
    [b'{"n": NaN}', b'{"n": Infinity}', b'{"n": -Infinity}', b'{"n": 1e400}', b"\xff", b"{"],
)
def test_what_is_not_json_is_refused(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        jsoncheck.loads(raw)


def test_nesting_is_bounded_without_recursion() -> None:
    assert jsoncheck.loads(b"[" * jsoncheck.MAX_DEPTH + b"]" * jsoncheck.MAX_DEPTH)
    for depth in (jsoncheck.MAX_DEPTH + 1, 100_000):
        with pytest.raises(ValidationError, match="nested"):
            jsoncheck.loads(b"[" * depth + b"]" * depth)
    value: object = "leaf"
    for _ in range(50_000):  # built in Python: deeper than the interpreter could recurse
        value = {"a": value}
    problem = jsoncheck.find_problem(value)
    assert problem is not None
    assert problem.path.endswith("...")  # the echo of a client's path stays short


def test_frames_skip_the_text_check_but_not_the_depth() -> None:
    assert jsoncheck.loads(b'{"a": "\\u0000"}', check_text=False) == {"a": "\x00"}
    with pytest.raises(ValidationError):
        jsoncheck.loads(b"[" * 1000 + b"]" * 1000, check_text=False)


def test_fine_input_passes_unchanged() -> None:
    value = {"name": "Zoë 😀", "n": [1, 2.5, None, True], "nested": {"deep": {"x": "é"}}}
    assert jsoncheck.find_problem(value) is None
    jsoncheck.check_input(value)
