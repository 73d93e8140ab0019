"""The OpenAPI 3.1 description of the REST aliases, served at ``GET /api/openapi.json``.

Nothing here re-types a shape. Paths come from the handlers' ``@operation`` declarations
(``rest/operation.py``); component schemas from the pydantic models those declarations name
(the views of ``services/views.py``, the bodies and envelopes of ``rest/schemas.py``) via
``model_json_schema``; node configs from the step registry. What is written here is only what
no model carries: the workflow DAG's per-type node inputs, the query parameters, the error
responses and the Server-Sent Events of the stream.

``tests/e2e/test_openapi.py`` fuzzes the live server against the document with schemathesis;
``tests/e2e/test_rest_shapes.py`` checks every route's real answers against it.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from starlette.routing import BaseRoute, Route

from treadle.engine.states import EventType, RunStatus
from treadle.engine.steps import StepRegistry
from treadle.rest.definition import definition_schemas, untitled
from treadle.rest.operation import (
    ERRORS,
    JSON_MEDIA,
    Operation,
    component,
    component_name,
    declared,
    path_items,
)
from treadle.rest.operation import ref as _ref
from treadle.rest.params import INT_MAX
from treadle.rest.schemas import DELTA_EVENT, Error, OutputDelta
from treadle.services.runs import MAX_EVENTS_PAGE
from treadle.services.views import EventView, View
from treadle.services.workflows import MAX_PAGE_SIZE

Schema = dict[str, Any]


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


class _Names(GenerateJsonSchema):
    def normalize_name(self, name: str) -> str:
        return component_name(super().normalize_name(name))


def _model_schemas(models: Iterable[type[BaseModel]]) -> dict[str, Schema]:
    """Components of ``models`` and of every model they contain (views in their JSON form)."""
    modes: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "serialization" if issubclass(model, View) else "validation") for model in models
    ]
    _, top = models_json_schema(
        modes, by_alias=True, ref_template="#/components/schemas/{model}", schema_generator=_Names
    )
    schemas: dict[str, Schema] = untitled(top.get("$defs", {}))
    return schemas


def _shapes(models: Iterable[type[BaseModel]]) -> dict[str, Schema]:
    """Every model's component, plus what REST adds: a run without steps, the stream's events."""
    schemas = _model_schemas([*models, Error, OutputDelta, EventView])
    run = schemas["Run"]
    schemas["RunSummary"] = {
        **run,
        "description": "A run as a list shows it: without its steps.",
        "properties": {k: v for k, v in run["properties"].items() if k != "steps"},
    }
    run["properties"]["steps"] = {"type": "array", "items": _ref("Step")}
    run["required"] = [*run["required"], "steps"]
    schemas["RunPage"]["properties"]["items"]["items"] = _ref("RunSummary")
    # The definition's shape depends on the registry's step types (rest/definition.py).
    schemas["Workflow"]["properties"]["definition"] = _ref("Definition")
    schemas["WorkflowInput"]["properties"]["definition"] = _ref("DefinitionInput")
    schemas["WorkflowUpdateInput"]["properties"]["definition"] = {
        **_nullable(_ref("DefinitionInput")),
        "description": "null or absent: unchanged",
    }
    schemas["StreamEvent"] = _stream_event()
    return schemas


def _stream_event() -> Schema:
    """One Server-Sent Event of ``/api/runs/{id}/stream`` (OAS 3.1: ``schema`` is per event)."""

    def sse(event: Schema, payload: str) -> Schema:
        data = {"type": "string", "contentMediaType": JSON_MEDIA, "contentSchema": _ref(payload)}
        return {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": event,
                "data": data,
                "id": {"type": "string", "pattern": "^[0-9]+$"},
            },
        }

    return {
        "description": (
            "A stored event (SSE `id` = its `seq`), a live-only output delta, or a final "
            "`error` event carrying the error JSON."
        ),
        "oneOf": [
            sse({"type": "string", "enum": _values(EventType)}, "Event"),
            sse({"const": DELTA_EVENT}, "OutputDelta"),
            sse({"const": "error"}, "Error"),
        ],
    }


def _parameters() -> dict[str, Schema]:
    def query(name: str, schema: Schema, description: str) -> Schema:
        return {"name": name, "in": "query", "required": False, "schema": schema} | {
            "description": description
        }

    def bounded(low: int, high: int, default: int) -> Schema:
        return {"type": "integer", "minimum": low, "maximum": high, "default": default}

    return {
        "id": {
            "name": "id",
            "in": "path",
            "required": True,
            # Not format uuid: any other string is simply an id that names nothing (404).
            "schema": {"type": "string"},
            "description": "The object's id (a UUID; anything else is 404).",
        },
        "page": query("page", bounded(1, INT_MAX, 1), "1-based page number."),
        "pageSize": query("pageSize", bounded(1, MAX_PAGE_SIZE, 20), "Items per page."),
        "status": query(
            "status", {"type": "string", "enum": _values(RunStatus)}, "Only runs in this status."
        ),
        "afterSeq": query("afterSeq", bounded(0, INT_MAX, 0), "Only events with a larger seq."),
        "limit": query("limit", bounded(1, MAX_EVENTS_PAGE, 100), "At most this many events."),
    }


def _responses() -> dict[str, Schema]:
    responses: dict[str, Schema] = {}
    for status, (name, code, description) in ERRORS.items():
        only_code = {"properties": {"error": {"properties": {"code": {"const": code}}}}}
        schema = {"allOf": [_ref("Error"), only_code]}
        response: Schema = {"description": description, "content": {JSON_MEDIA: {"schema": schema}}}
        if status == 429:
            response["headers"] = {
                "Retry-After": {
                    "required": True,
                    "description": "Seconds to wait before retrying.",
                    "schema": {"type": "integer", "minimum": 0},
                }
            }
        responses[name] = response
    return responses


def build_openapi(registry: StepRegistry, routes: Iterable[BaseRoute]) -> Schema:
    """The OpenAPI 3.1 document of ``routes`` (their ``@operation`` declarations)."""
    operations: list[Operation] = [
        op
        for route in routes
        if isinstance(route, Route) and (op := declared(route.endpoint)) is not None
    ]
    models = {model for op in operations for model in op.models()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Treadle REST API",
            "version": "1",
            "description": (
                "REST aliases of the GraphQL operations (`/graphql`). Authenticate with "
                "`Authorization: Bearer <JWT>` from register or login. Errors are "
                '`{"error": {"code", "message"}}`.'
            ),
        },
        "tags": [{"name": name} for name in ("auth", "workflows", "runs", "meta")],
        "security": [{"bearerAuth": []}],
        "paths": path_items(operations),
        "components": {
            "schemas": {**_shapes(sorted(models, key=component)), **definition_schemas(registry)},
            "parameters": _parameters(),
            "responses": _responses(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }
