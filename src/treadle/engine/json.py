"""JSON value types shared by the engine, services and adapters.

``JSON`` and ``JSONObject`` are implicit recursive aliases for mypy only: pydantic cannot build a
validator from them (a model field typed with them raises RecursionError). Pydantic models
(settings, REST bodies, GraphQL inputs) must use ``pydantic.JsonValue`` instead.
"""

from __future__ import annotations

import re
from typing import Final, TypeAlias

JSON: TypeAlias = "dict[str, JSON] | list[JSON] | str | int | float | bool | None"
JSONObject: TypeAlias = "dict[str, JSON]"

# PostgreSQL's text and jsonb cannot hold U+0000, and UTF-8 cannot encode a lone surrogate.
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
_WHAT: Final = {"\x00": "a NUL character (U+0000)"}


def unstorable(value: JSON) -> str | None:
    """Why ``value`` cannot be stored (a string or key holds NUL or a lone surrogate), or None.

    Pure and iterative (no recursion limit); every string is scanned once by one C-level regex.
    """
    stack: list[JSON] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            texts: list[str] = [item]
        elif isinstance(item, dict):
            texts = list(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            texts = []
            stack.extend(item)
        else:
            continue
        for text in texts:
            found = _UNSTORABLE.search(text)
            if found is not None:
                return _WHAT.get(found.group(), "a lone surrogate (an unpaired UTF-16 half)")
    return None


def storable_text(text: str) -> str:
    """``text`` with every character the database cannot store replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)
