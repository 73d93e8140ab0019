"""JSON value types shared by the engine, services and adapters.

``JSON`` and ``JSONObject`` are implicit recursive aliases for mypy only: pydantic cannot build a
validator from them (a model field typed with them raises RecursionError). Pydantic models
(settings, REST bodies, GraphQL inputs) must use ``pydantic.JsonValue`` instead.
"""

from __future__ import annotations

from typing import TypeAlias

JSON: TypeAlias = "dict[str, JSON] | list[JSON] | str | int | float | bool | None"
JSONObject: TypeAlias = "dict[str, JSON]"
