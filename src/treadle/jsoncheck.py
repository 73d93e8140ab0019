"""Client JSON that the database and our answers can hold: one check for REST and GraphQL.

PostgreSQL refuses NUL (``\\u0000``) in text and ``jsonb``, a lone UTF-16 surrogate cannot be
encoded as UTF-8, and ``NaN``/``Infinity`` (``1e400`` parses as infinity) are not JSON. Python's
``json`` module accepts all of these, and recursion over 10,000-deep arrays overflows the stack.
Each of them reached the database or a renderer and became a 500; they are refused on the way
in instead, naming the field (``definition.nodes.0.config.url``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Final

from treadle.errors import ValidationError

# Deeper than anything the engine accepts (templates stop at 100 levels), far below the
# interpreter's recursion limit, so nothing downstream recurses itself to death.
MAX_DEPTH: Final = 128
MAX_PATH: Final = 120  # characters of a field's path shown in an error


@dataclass(frozen=True, slots=True)
class Problem:
    path: str  # dotted, "" for the top level
    reason: str

    def error(self, prefix: str = "") -> ValidationError:
        field = ".".join(part for part in (prefix, self.path) if part) or "body"
        return ValidationError(
            f"invalid input: {field}: {self.reason}", fields={field: self.reason}
        )


# A path as a linked list (parent, key): extending it costs O(1) however deep the value is.
_Path = tuple["_Path", str] | None


def find_problem(
    value: object, *, max_depth: int = MAX_DEPTH, check_text: bool = True
) -> Problem | None:
    """The first string, key or number in ``value`` that cannot be stored, or None.

    Iterative, so any depth is safe to look at; ``max_depth`` counts containers. Without
    ``check_text`` only the nesting is checked.
    """
    if not isinstance(value, dict | list | tuple):
        reason = _scalar_problem(value) if check_text else None
        return Problem("", reason) if reason else None
    stack: list[tuple[object, _Path, int]] = [(value, None, 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth >= max_depth:
            return Problem(_dotted(path), f"is nested more than {max_depth} levels deep")
        pairs = item.items() if isinstance(item, dict) else enumerate(item)  # type: ignore[arg-type]
        for key, child in pairs:
            if check_text and isinstance(key, str) and (reason := _text_problem(key)):
                return Problem(_dotted(path), f"has a key that {reason}")
            if isinstance(child, dict | list | tuple):
                stack.append((child, (path, str(key)), depth + 1))
            elif check_text and (reason := _scalar_problem(child)):
                return Problem(_dotted((path, str(key))), reason)
    return None


def check_input(value: object, prefix: str = "") -> None:
    """VALIDATION_ERROR naming the first field of ``value`` that cannot be stored."""
    problem = find_problem(value)
    if problem is not None:
        raise problem.error(prefix)


def loads(raw: bytes | str, *, check_text: bool = True) -> object:
    """Parse client JSON strictly; ValidationError says what is wrong and where.

    Invalid UTF-8, ``NaN``/``Infinity``/out-of-range numbers and nesting past ``MAX_DEPTH``
    are refused; with ``check_text`` so are NUL characters and lone surrogates.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise ValidationError("request body is not valid UTF-8") from exc
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise ValidationError(f"JSON is nested more than {MAX_DEPTH} levels deep") from exc
    except ValueError as exc:  # JSONDecodeError, and ours from the two hooks above
        raise ValidationError(f"request body is not valid JSON: {_short(exc)}") from exc
    problem = find_problem(data, check_text=check_text)
    if problem is not None:
        raise problem.error()
    return data


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"number {text[:20]} is out of range")
    return number


def _scalar_problem(item: object) -> str | None:
    if isinstance(item, str):
        return _text_problem(item)
    if isinstance(item, float) and not math.isfinite(item):
        return "must be a finite number"
    return None


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogates"
    return None


def _dotted(path: _Path) -> str:
    parts: list[str] = []
    while path is not None:
        path, key = path
        parts.append(key)
    text = ".".join(reversed(parts))  # keys are client text: keep the echo short
    return text if len(text) <= MAX_PATH else text[: MAX_PATH - 3] + "..."


def _short(exc: ValueError) -> str:
    message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
    return message[:100]
