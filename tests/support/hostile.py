"""Hypothesis strategies for hostile JSON: what an attacker (or a broken client) sends.

NUL characters, lone surrogates, bidi and non-characters, template braces, very long strings
(random and repetitive), integers and floats past every range (``1e400``, ``NaN``), and
nesting from a few levels to 20,000. ``encode`` turns a value into request bytes the way a
client would (lone surrogates as ``\\ud800`` escapes, non-finite floats as ``NaN``/``Infinity``
tokens); ``raw_bodies`` adds bytes that are not JSON at all.
"""

from __future__ import annotations

import json
from typing import Any, Final

from hypothesis import strategies as st

NASTY = [
    "\x00",
    "\ud800",
    "\udfff",
    "\ufffe",
    "\u202e",
    "\u0085",
    "{{",
    "}}",
    "{% for x in range(99999) %}",
    "'",
    '"',
    "\\",
    "%00",
    "😀",
    "http://u:p@",
]

# Text with the odd nasty piece: any code point (surrogates included) plus the list above.
pieces = st.one_of(st.characters(codec=None), st.sampled_from(NASTY))
text = st.lists(pieces, max_size=20).map("".join)
# Up to 150,000 characters: even as \u0000 escapes a body stays under the 1 MiB limit (bigger
# bodies are a 413, tested on their own).
LONG: Final = 150_000
long_text = st.one_of(
    st.builds(
        lambda piece, n: (piece * n)[:LONG],
        st.sampled_from(["a", "\x00", "{", "é", "x:", "a/", "Bearer ", "0"]),
        st.integers(1_000, LONG),
    ),
    st.text(st.characters(codec=None), min_size=2_000, max_size=20_000),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**31 - 2, max_value=2**31 + 2),
    st.sampled_from([2**63, -(2**63) - 1, 10**400, -(10**400)]),
    st.floats(),  # NaN, ±Infinity included
    st.sampled_from([1e308, -0.0, 5e-324]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text)


def _nest(depth: int, leaf: Any, as_list: bool) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if as_list else {"a": value}
    return value


deep = st.builds(_nest, st.integers(50, 20_000), scalars, st.booleans())
values = st.one_of(
    st.recursive(
        scalars,
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
        max_leaves=12,
    ),
    long_text,
    deep,
)


def encode(value: Any) -> bytes:
    """JSON as a client writes it; any nesting depth (the stdlib encoder would recurse)."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Raw):
            out.append(item.text)
        elif isinstance(item, list):
            stack.append(_Raw("]"))
            for index, child in reversed(list(enumerate(item))):
                stack.append(child)
                if index:
                    stack.append(_Raw(","))
            out.append("[")
        elif isinstance(item, dict):
            stack.append(_Raw("}"))
            for index, (key, child) in reversed(list(enumerate(item.items()))):
                stack.append(child)
                stack.append(_Raw(json.dumps(str(key)) + ":"))
                if index:
                    stack.append(_Raw(","))
            out.append("{")
        else:
            out.append(json.dumps(item))
    return "".join(out).encode()


class _Raw:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


raw_bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"", b"null", b"123", b"[]", b'"x"', b"{", b"\xff\xfe", b"[" * 100_000]),
    values.map(encode),
)
