"""``@operation``: one declaration per REST handler, read by both the router and the OpenAPI.

A handler's method, path, request body, responses (status → description and model) and
error statuses are written once, beside it. ``route()`` builds its Starlette ``Route`` and
``path_items()`` its OpenAPI paths, so a route cannot be served undocumented or documented
with another method. Declaring is data only: importing a handler module builds nothing.

Error statuses follow from the declaration: every authenticated operation may answer 401 and
429, every one with a JSON body 400 and 413; ``errors`` adds the rest.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Schema = dict[str, Any]
Handler = Callable[[Request], Awaitable[Response]]
H = TypeVar("H", bound=Handler)
# A success response: its description and its body (a model, a whole response, or no body).
Ok = tuple[str, type[BaseModel] | Schema | None]

JSON_MEDIA: Final = "application/json"
AUTHED: Final = (401, 429)  # every authenticated call may be refused or throttled
WRITE: Final = (400, 413)  # every call with a JSON body
# status → (response component, error code, description)
ERRORS: Final[Mapping[int, tuple[str, str, str]]] = {
    400: ("ValidationError", "VALIDATION_ERROR", "The input is invalid."),
    401: ("Unauthenticated", "UNAUTHENTICATED", "Missing, invalid or expired credentials."),
    403: ("Forbidden", "FORBIDDEN", "The caller's role may not do this."),
    404: ("NotFound", "NOT_FOUND", "No such object for this tenant (or no such route)."),
    409: ("Conflict", "CONFLICT", "The request conflicts with the current state."),
    413: ("PayloadTooLarge", "PAYLOAD_TOO_LARGE", "The request body exceeds the limit (1 MiB)."),
    429: ("RateLimited", "RATE_LIMITED", "Too many requests; retry after `Retry-After` seconds."),
}
# Component names of models whose class name is not the public one.
NAMES: Final = {"AuthView": "AuthPayload"}
PATH_PARAMETERS: Final[Mapping[str, Schema]] = {
    "id": {"$ref": "#/components/parameters/id"},
    "nodeId": {
        "name": "nodeId",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The APPROVAL node waiting for a decision.",
    },
    "triggerId": {
        "name": "triggerId",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "A webhook trigger's id (see listWorkflowTriggers).",
    },
}


def component_name(class_name: str) -> str:
    """The name under ``#/components/schemas`` of the model class ``class_name``."""
    return NAMES.get(class_name, class_name.removesuffix("View"))


def component(model: type[BaseModel]) -> str:
    return component_name(model.__name__)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass(frozen=True)
class Operation:
    """What ``@operation`` records about one handler."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    ok: Mapping[int, Ok]
    errors: tuple[int, ...] = ()
    body: type[BaseModel] | Schema | None = None
    body_required: bool = True
    parameters: tuple[Schema, ...] = ()
    public: bool = False  # no bearer token (and no 401/429 unless listed)
    security: tuple[Schema, ...] | None = None
    links: Mapping[str, str] = field(default_factory=dict)  # link name -> operationId

    def models(self) -> Iterable[type[BaseModel]]:
        """The models this operation's document refers to."""
        bodies = [self.body, *(body for _, body in self.ok.values())]
        return [each for each in bodies if isinstance(each, type)]

    def document(self) -> Schema:
        statuses = set(self.errors) | set(() if self.public else AUTHED)
        statuses |= set(WRITE if self.body is not None else ())
        responses = {str(status): self._ok(*self.ok[status]) for status in sorted(self.ok)}
        for status in sorted(statuses):
            responses[str(status)] = {"$ref": f"#/components/responses/{ERRORS[status][0]}"}
        doc: Schema = {"operationId": self.operation_id, "summary": self.summary}
        doc["tags"] = [self.tag]
        if self.public or self.security is not None:
            doc["security"] = [] if self.public else list(self.security or ())
        if self.parameters:
            doc["parameters"] = list(self.parameters)
        if self.body is not None:
            doc["requestBody"] = {"required": self.body_required, "content": _json(self.body)}
        return {**doc, "responses": responses}

    def _ok(self, description: str, body: type[BaseModel] | Schema | None) -> Schema:
        if isinstance(body, dict):
            return {"description": description, **body}
        response: Schema = {"description": description}
        if body is not None:
            response["content"] = _json(body)
            if self.links:
                response["links"] = {
                    name: {"operationId": target, "parameters": {"id": "$response.body#/id"}}
                    for name, target in self.links.items()
                }
        return response


def _json(body: type[BaseModel] | Schema) -> Schema:
    schema = ref(component(body)) if isinstance(body, type) else body
    return {JSON_MEDIA: {"schema": schema}}


_DECLARED: dict[object, Operation] = {}


def operation(method: str, path: str, operation_id: str, **declared: Any) -> Callable[[H], H]:
    """Declare a handler's route and its OpenAPI operation (see ``Operation``)."""

    def declare(handler: H) -> H:
        _DECLARED[handler] = Operation(method, path, operation_id, **declared)
        return handler

    return declare


def declared(handler: object) -> Operation | None:
    return _DECLARED.get(handler)


def route(handler: Handler) -> Route:
    """The Starlette route of a declared handler."""
    op = _DECLARED[handler]
    return Route(op.path, handler, methods=[op.method])


def path_items(operations: Iterable[Operation]) -> dict[str, Schema]:
    """OpenAPI ``paths``: each path's parameters once, then its operations by method."""
    paths: dict[str, Schema] = {}
    for op in operations:
        item = paths.setdefault(op.path, {})
        names = re.findall(r"{(\w+)}", op.path)
        if names:
            item["parameters"] = [PATH_PARAMETERS[name] for name in names]
        item[op.method.lower()] = op.document()
    return paths
