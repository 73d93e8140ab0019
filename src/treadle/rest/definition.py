"""JSON schemas of a workflow definition, for the OpenAPI document of one step registry.

The request form (``DefinitionInput``: per step type, its node with its config model's
schema) and the stored, canonical form a workflow shows (``Definition``). Node configs and
triggers come from their pydantic models; the rest is the contract of ``engine/dag.py``.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel

from treadle.engine.dag import MAX_EDGES, MAX_NODES, NODE_ID, RetryPolicy
from treadle.engine.steps import StepRegistry
from treadle.engine.triggers import CronTrigger, WebhookTrigger
from treadle.rest.operation import ref as _ref

Schema = dict[str, Any]

# Rules of a step type's config that its pydantic JSON schema does not carry (validators).
_CONFIG_RULES: Final[dict[str, dict[str, Any]]] = {
    "DELAY": {
        "oneOf": [
            {
                "required": ["seconds"],
                "properties": {"seconds": {"type": "number"}, "until": {"type": "null"}},
            },
            {
                "required": ["until"],
                "properties": {"until": {"type": "string"}, "seconds": {"type": "null"}},
            },
        ]
    },
}


def _object(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """A closed object whose properties are all required except ``optional`` ones."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [name for name in properties if name not in optional],
        "properties": properties,
    }


def untitled(node: Any) -> Any:
    """``node`` without pydantic's generated titles (they would name generated classes)."""
    if isinstance(node, list):
        return [untitled(item) for item in node]
    if not isinstance(node, dict):
        return node
    return {
        key: untitled(value)
        for key, value in node.items()
        if not (key == "title" and isinstance(value, str))
    }


def _from_model(model: type[BaseModel]) -> Schema:
    """``model``'s JSON schema with its local ``$defs`` inlined (they resolve against the OAS)."""
    raw = model.model_json_schema(by_alias=True)
    defs: dict[str, Any] = raw.pop("$defs", {})
    cleaned: Schema = untitled(_inline(raw, defs))
    return cleaned


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    out: Schema = {}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        out.update(_inline(defs[ref.removeprefix("#/$defs/")], defs))
    out.update({key: _inline(value, defs) for key, value in node.items() if key != "$ref"})
    return out


def definition_schemas(registry: StepRegistry) -> dict[str, Schema]:
    """The workflow DAG: per-type node inputs for requests, the canonical form for responses."""
    types = sorted(registry)
    node_id = {"type": "string", "pattern": NODE_ID.pattern}
    timeout = {"type": "number", "exclusiveMinimum": 0, "maximum": 86_400, "default": 300}
    schemas: dict[str, Schema] = {"RetryPolicy": _from_model(RetryPolicy)}
    variants = []
    for name in types:
        config = {**_from_model(registry[name].config_model), **_CONFIG_RULES.get(name, {})}
        variant = _object(
            {
                "id": node_id,
                "type": {"const": name},
                "config": _ref(f"{name}Config"),
                "retry": _ref("RetryPolicy"),
                "timeoutSeconds": timeout,
            },
            optional=("retry", "timeoutSeconds") + (() if config.get("required") else ("config",)),
        )
        schemas[f"{name}Config"] = config
        schemas[f"{name}NodeInput"] = variant
        variants.append(_ref(f"{name}NodeInput"))
    schemas["NodeInput"] = {"oneOf": variants}
    schemas["EdgeInput"] = _object(
        {
            "from": {"type": "string"},
            "to": {"type": "string"},
            "when": {"type": ["boolean", "null"]},
        },
        optional=("when",),
    )
    schemas["DefinitionInput"] = {
        "description": (
            "A workflow DAG. Besides this shape: node ids are unique, edges name existing nodes, "
            'the graph is acyclic, and edges leaving a CONDITION carry "when" (others none).'
        ),
        **_object(
            {
                "nodes": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": MAX_NODES,
                    "items": _ref("NodeInput"),
                },
                "edges": {"type": "array", "maxItems": MAX_EDGES, "items": _ref("EdgeInput")},
            },
            optional=("edges",),
        ),
    }
    retry = {
        name: {"type": "integer" if name == "maxAttempts" else "number"}
        for name in ("maxAttempts", "backoffSeconds", "maxBackoffSeconds")
    }
    schemas["Node"] = _object(
        {
            "id": node_id,
            "type": {"type": "string", "enum": types},
            "config": {"type": "object"},
            "retry": _object(retry),
            "timeoutSeconds": {"type": "number"},
        }
    )
    schemas["Edge"] = _object(
        {"from": {"type": "string"}, "to": {"type": "string"}, "when": {"type": "boolean"}},
        optional=("when",),
    )
    triggers = _from_model(CronTrigger), _from_model(WebhookTrigger)
    schemas["Definition"] = _object(
        {
            "nodes": {"type": "array", "items": _ref("Node")},
            "edges": {"type": "array", "items": _ref("Edge")},
            "triggers": {"type": "array", "items": {"oneOf": list(triggers)}},
        },
        optional=("triggers",),
    )
    return schemas
