"""The OpenAPI 3.1 description of the REST aliases, served at ``GET /api/openapi.json``.

The document is built from the same pydantic models the services validate with (request
bodies, step configs) plus hand-written shapes of the views' ``to_json``. It is built on the
first request and kept on the application's state, so importing this module does no work.

Every response a route can give is listed with its schema: the success shape and each error
(``{"error": {"code", "message"}}``, the code fixed per status). ``tests/e2e/test_openapi.py``
fuzzes the live server against it with schemathesis.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse

from treadle.engine.dag import MAX_EDGES, MAX_NODES, NODE_ID, RetryPolicy
from treadle.engine.states import EventType, RunStatus, StepStatus
from treadle.engine.steps import StepRegistry
from treadle.resources import Resources
from treadle.security import Role
from treadle.services.auth import CreateUserInput, LoginInput, RegisterInput
from treadle.services.runs import MAX_EVENTS_PAGE
from treadle.services.workflows import MAX_PAGE_SIZE, WorkflowInput, WorkflowUpdateInput

Schema = dict[str, Any]

OPENAPI_PATH: Final = "/api/openapi.json"
INT32_MAX: Final = 2**31 - 1  # integers in query strings have GraphQL's Int range
JSON_MEDIA: Final = "application/json"
SSE_MEDIA: Final = "text/event-stream"
DELTA_EVENT: Final = "STEP_OUTPUT_DELTA"

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

# status → (component name, error code, description)
_ERRORS: Final[dict[int, tuple[str, str, str]]] = {
    400: ("ValidationError", "VALIDATION_ERROR", "The input is invalid."),
    401: ("Unauthenticated", "UNAUTHENTICATED", "Missing, invalid or expired credentials."),
    403: ("Forbidden", "FORBIDDEN", "The caller's role may not do this."),
    404: ("NotFound", "NOT_FOUND", "No such object for this tenant (or no such route)."),
    409: ("Conflict", "CONFLICT", "The request conflicts with the current state."),
    413: ("PayloadTooLarge", "PAYLOAD_TOO_LARGE", "The request body exceeds the limit (1 MiB)."),
    429: ("RateLimited", "RATE_LIMITED", "Too many requests; retry after `Retry-After` seconds."),
}
# METHOD_NOT_ALLOWED: 405 (with Allow) for a known path and a method it does not serve.
_ERROR_CODES: Final = [code for _, code, _ in _ERRORS.values()] + [
    "METHOD_NOT_ALLOWED",
    "INTERNAL",
    "UNAVAILABLE",
]


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: Schema) -> Schema:
    return {"oneOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Schema], *, optional: tuple[str, ...] = ()) -> Schema:
    """A closed object whose properties are all required except ``optional`` ones."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [name for name in properties if name not in optional],
        "properties": properties,
    }


# --- JSON schemas from pydantic models --------------------------------------------------------


def _from_model(model: type[BaseModel]) -> Schema:
    """``model``'s JSON schema with its local ``$defs`` inlined (they resolve against the OAS)."""
    raw = model.model_json_schema(by_alias=True)
    defs: dict[str, Any] = raw.pop("$defs", {})
    cleaned: Schema = _inline(raw, defs)
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
    for key, value in node.items():
        if key == "$ref" or (key == "title" and isinstance(value, str)):
            continue
        out[key] = _inline(value, defs)
    return out


def _with_property(schema: Schema, name: str, replacement: Schema) -> Schema:
    return {**schema, "properties": {**schema["properties"], name: replacement}}


# --- component schemas ------------------------------------------------------------------------


def _definition_schemas(registry: StepRegistry) -> dict[str, Schema]:
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
    schemas["Definition"] = _object(
        {
            "nodes": {"type": "array", "items": _ref("Node")},
            "edges": {"type": "array", "items": _ref("Edge")},
        }
    )
    return schemas


def _input_schemas() -> dict[str, Schema]:
    workflow = _with_property(_from_model(WorkflowInput), "definition", _ref("DefinitionInput"))
    update = _with_property(
        _from_model(WorkflowUpdateInput), "definition", _nullable(_ref("DefinitionInput"))
    )
    update["properties"]["definition"]["description"] = "null or absent: unchanged"
    execute = {
        "type": "object",
        "properties": {
            "input": {
                "description": "The run's input (absent or null: {}).",
                "type": ["object", "null"],
            }
        },
    }
    rerun = {
        "type": "object",
        "properties": {
            "fromNodeId": {
                "description": "Re-run from this node (default: the first failed one).",
                "type": ["string", "null"],
            },
            "input": {
                "description": "A new input for the run (absent or null: unchanged).",
                "type": ["object", "null"],
            },
        },
    }
    approval = _object(
        {
            "approved": {"type": "boolean", "description": "true approves, false rejects."},
            "comment": {"type": ["string", "null"], "maxLength": 10_000},
            "data": {"description": "Any JSON, passed on in the step's output."},
        },
        optional=("comment", "data"),
    )
    return {
        "ApprovalInput": approval,
        "RerunInput": rerun,
        "RegisterInput": _from_model(RegisterInput),
        "LoginInput": _from_model(LoginInput),
        "CreateUserInput": _from_model(CreateUserInput),
        "WorkflowInput": workflow,
        "WorkflowUpdateInput": update,
        "ExecuteInput": execute,
    }


def _view_schemas() -> dict[str, Schema]:
    uuid_ = {"type": "string", "format": "uuid"}
    time_ = {"type": "string", "format": "date-time"}
    maybe_time = {"type": ["string", "null"], "format": "date-time"}
    any_json: Schema = {"description": "Any JSON value."}
    run: dict[str, Schema] = {
        "id": uuid_,
        "workflowId": uuid_,
        "workflowVersion": {"type": "integer", "minimum": 1},
        "status": {"type": "string", "enum": _values(RunStatus)},
        "input": {"type": "object"},
        "output": any_json,
        "error": any_json,
        "createdAt": time_,
        "startedAt": maybe_time,
        "finishedAt": maybe_time,
    }
    return {
        "User": _object(
            {
                "id": uuid_,
                "email": {"type": "string"},
                "name": {"type": "string"},
                "role": {"type": "string", "enum": _values(Role)},
                "tenantId": uuid_,
            }
        ),
        "Tenant": _object({"id": uuid_, "name": {"type": "string"}}),
        "AuthPayload": _object(
            {"token": {"type": "string"}, "user": _ref("User"), "tenant": _ref("Tenant")}
        ),
        "Workflow": _object(
            {
                "id": uuid_,
                "name": {"type": "string"},
                "description": {"type": "string"},
                "version": {"type": "integer", "minimum": 1},
                "definition": _ref("Definition"),
                "createdAt": time_,
                "updatedAt": time_,
            }
        ),
        "Step": _object(
            {
                "id": uuid_,
                "nodeId": {"type": "string"},
                "type": {"type": "string"},
                "status": {"type": "string", "enum": _values(StepStatus)},
                "attempt": {"type": "integer", "minimum": 0},
                "output": any_json,
                "error": any_json,
                "startedAt": maybe_time,
                "finishedAt": maybe_time,
            }
        ),
        "RunSummary": _object(run),
        "Run": _object({**run, "steps": {"type": "array", "items": _ref("Step")}}),
        "Event": _object(
            {
                "id": uuid_,
                "runId": uuid_,
                "seq": {"type": "integer", "minimum": 1},
                "type": {"type": "string", "enum": _values(EventType)},
                "nodeId": {"type": ["string", "null"]},
                "data": any_json,
                "createdAt": time_,
            }
        ),
        "OutputDelta": _object(
            {
                "type": {"const": DELTA_EVENT},
                "runId": uuid_,
                "nodeId": {"type": "string"},
                "data": _object({"delta": {"type": "string"}}),
            }
        ),
        "WorkflowPage": _page("Workflow"),
        "RunPage": _page("RunSummary"),
        "EventList": _object({"items": {"type": "array", "items": _ref("Event")}}),
        "TriggerList": _object({"items": {"type": "array", "items": _ref("Trigger")}}),
        "Trigger": _object(
            {
                "id": uuid_,
                "workflowId": uuid_,
                "key": {"type": "string"},
                "type": {"type": "string", "enum": ["cron", "webhook"]},
                "path": {"type": ["string", "null"], "description": "A webhook's URL path."},
                "schedule": {"type": ["string", "null"]},
                "timezone": {"type": ["string", "null"]},
                "nextFireAt": maybe_time,
                "lastFiredAt": maybe_time,
                "secret": {
                    "type": ["string", "null"],
                    "description": "A webhook's HMAC key; shown to ADMINs only (else null).",
                },
            }
        ),
        "Health": _object(
            {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "database": {"type": "string", "enum": ["ok", "down"]},
                "queue": {"type": "string", "enum": ["ok", "down"]},
            }
        ),
        "StreamEvent": _stream_event(),
        "Error": _object(
            {
                "error": _object(
                    {
                        "code": {"type": "string", "enum": _ERROR_CODES},
                        "message": {"type": "string"},
                    }
                )
            }
        ),
    }


def _page(item: str) -> Schema:
    return _object(
        {
            "items": {"type": "array", "items": _ref(item)},
            "page": {"type": "integer", "minimum": 1},
            "pageSize": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            "total": {"type": "integer", "minimum": 0},
        }
    )


def _stream_event() -> Schema:
    """One Server-Sent Event of ``/api/runs/{id}/stream`` (OAS 3.1: ``schema`` is per event)."""

    def sse(event: Schema, payload: str) -> Schema:
        return {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": event,
                "data": {
                    "type": "string",
                    "contentMediaType": JSON_MEDIA,
                    "contentSchema": _ref(payload),
                },
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


# --- parameters, responses, operations ---------------------------------------------------------


def _query(name: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _parameters() -> dict[str, Schema]:
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
        "page": _query("page", bounded(1, INT32_MAX, 1), "1-based page number."),
        "pageSize": _query("pageSize", bounded(1, MAX_PAGE_SIZE, 20), "Items per page."),
        "status": _query(
            "status", {"type": "string", "enum": _values(RunStatus)}, "Only runs in this status."
        ),
        "afterSeq": _query("afterSeq", bounded(0, INT32_MAX, 0), "Only events with a larger seq."),
        "limit": _query("limit", bounded(1, MAX_EVENTS_PAGE, 100), "At most this many events."),
    }


def _responses() -> dict[str, Schema]:
    responses: dict[str, Schema] = {}
    for status, (name, code, description) in _ERRORS.items():
        schema = {
            "allOf": [
                _ref("Error"),
                {"properties": {"error": {"properties": {"code": {"const": code}}}}},
            ]
        }
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


def _ok(description: str, schema: str, links: dict[str, Schema] | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {JSON_MEDIA: {"schema": _ref(schema)}},
    }
    if links:
        response["links"] = links
    return response


def _link(operation_id: str, source: str = "$response.body#/id") -> Schema:
    return {"operationId": operation_id, "parameters": {"id": source}}


def _errors(*statuses: int) -> dict[str, Schema]:
    return {
        str(status): {"$ref": f"#/components/responses/{_ERRORS[status][0]}"}
        for status in sorted(statuses)
    }


def _body(schema: str, *, required: bool = True) -> Schema:
    return {"required": required, "content": {JSON_MEDIA: {"schema": _ref(schema)}}}


_ID: Final = {"$ref": "#/components/parameters/id"}
_PAGING: Final = [
    {"$ref": "#/components/parameters/page"},
    {"$ref": "#/components/parameters/pageSize"},
]
_PUBLIC: Final[list[Schema]] = []
_AUTHED: Final = (401, 429)  # every authenticated call may be refused or throttled
_WRITE: Final = (400, 413)  # every call with a JSON body


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Schema],
    **extra: Any,
) -> Schema:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        **extra,
        "responses": responses,
    }


def _auth_paths() -> dict[str, Schema]:
    auth_ok = "The new token, its user and tenant."
    return {
        "/api/auth/register": {
            "post": _operation(
                "register",
                "Create a tenant and its first user (an ADMIN)",
                "auth",
                {"201": _ok(auth_ok, "AuthPayload"), **_errors(*_WRITE, 409, 429)},
                security=_PUBLIC,
                requestBody=_body("RegisterInput"),
            )
        },
        "/api/auth/login": {
            "post": _operation(
                "login",
                "Exchange an email and password for a token",
                "auth",
                {"200": _ok(auth_ok, "AuthPayload"), **_errors(*_WRITE, *_AUTHED)},
                security=_PUBLIC,
                requestBody=_body("LoginInput"),
            )
        },
        "/api/users": {
            "post": _operation(
                "createUser",
                "Add a user to the caller's tenant (ADMIN only)",
                "auth",
                {"201": _ok("The new user.", "User"), **_errors(*_WRITE, *_AUTHED, 403, 409)},
                requestBody=_body("CreateUserInput"),
            )
        },
        "/api/me": {
            "get": _operation(
                "me",
                "The calling user",
                "auth",
                {"200": _ok("The user.", "User"), **_errors(*_AUTHED)},
            )
        },
    }


def _workflow_paths() -> dict[str, Schema]:
    links = {
        "getWorkflow": _link("getWorkflow"),
        "updateWorkflow": _link("updateWorkflow"),
        "deleteWorkflow": _link("deleteWorkflow"),
        "executeWorkflow": _link("executeWorkflow"),
        "listWorkflowRuns": _link("listWorkflowRuns"),
    }
    one = _errors(*_AUTHED, 404)
    return {
        "/api/workflows": {
            "get": _operation(
                "listWorkflows",
                "The tenant's workflows, newest first",
                "workflows",
                {"200": _ok("One page of workflows.", "WorkflowPage"), **_errors(*_AUTHED, 400)},
                parameters=_PAGING,
            ),
            "post": _operation(
                "createWorkflow",
                "Create a workflow (version 1)",
                "workflows",
                {"201": _ok("The workflow.", "Workflow", links), **_errors(*_WRITE, *_AUTHED)},
                requestBody=_body("WorkflowInput"),
            ),
        },
        "/api/workflows/{id}": {
            "parameters": [_ID],
            "get": _operation(
                "getWorkflow",
                "One workflow",
                "workflows",
                {"200": _ok("The workflow.", "Workflow"), **one},
            ),
            "put": _operation(
                "updateWorkflow",
                "Change any subset of name, description and definition (version + 1)",
                "workflows",
                {"200": _ok("The updated workflow.", "Workflow"), **one, **_errors(*_WRITE)},
                requestBody=_body("WorkflowUpdateInput", required=False),  # none: {}
            ),
            "delete": _operation(
                "deleteWorkflow",
                "Soft-delete a workflow (its past runs remain)",
                "workflows",
                {"204": {"description": "Deleted."}, **one},
            ),
        },
    }


def _run_paths() -> dict[str, Schema]:
    run_links = {
        "getRun": _link("getRun"),
        "listRunEvents": _link("listRunEvents"),
        "streamRunEvents": _link("streamRunEvents"),
        "cancelRun": _link("cancelRun"),
    }
    one = _errors(*_AUTHED, 404)
    idempotency_key = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        "description": "The same key within 24 h returns the run it started (200).",
    }
    last_event_id = {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": INT32_MAX},
        "description": "Resume after this seq (sent by a reconnecting EventSource).",
    }
    token = _query("token", {"type": "string"}, "The JWT, for clients that cannot set headers.")
    stream_ok = {
        "description": "Stored events after `afterSeq`, then live ones; ends after the last.",
        # A string: generated clients read the stream as text (an object schema made them
        # parse it as JSON and crash). StreamEvent describes each event, for readers.
        "content": {
            SSE_MEDIA: {
                "schema": {
                    "type": "string",
                    "description": "Server-Sent Events; each is one `StreamEvent`.",
                }
            }
        },
    }
    return {
        "/api/workflows/{id}/execute": {
            "parameters": [_ID],
            "post": _operation(
                "executeWorkflow",
                "Start a run of the workflow's current version",
                "runs",
                {
                    "200": _ok(
                        "The run an earlier request with this key started.", "Run", run_links
                    ),
                    "202": _ok("The new run.", "Run", run_links),
                    **one,
                    **_errors(*_WRITE),
                },
                parameters=[idempotency_key],
                requestBody=_body("ExecuteInput", required=False),
            ),
        },
        "/api/workflows/{id}/runs": {
            "parameters": [_ID],
            "get": _operation(
                "listWorkflowRuns",
                "The workflow's runs, newest first (without steps)",
                "runs",
                {"200": _ok("One page of runs.", "RunPage"), **one, **_errors(400)},
                parameters=[*_PAGING, {"$ref": "#/components/parameters/status"}],
            ),
        },
        "/api/runs/{id}": {
            "parameters": [_ID],
            "get": _operation(
                "getRun", "One run with its steps", "runs", {"200": _ok("The run.", "Run"), **one}
            ),
        },
        "/api/runs/{id}/events": {
            "parameters": [_ID],
            "get": _operation(
                "listRunEvents",
                "The run's stored events, in seq order",
                "runs",
                {"200": _ok("The events.", "EventList"), **one, **_errors(400)},
                parameters=[
                    {"$ref": "#/components/parameters/afterSeq"},
                    {"$ref": "#/components/parameters/limit"},
                ],
            ),
        },
        "/api/runs/{id}/stream": {
            "parameters": [_ID],
            "get": _operation(
                "streamRunEvents",
                "The run's events as Server-Sent Events",
                "runs",
                {"200": stream_ok, **one, **_errors(400)},
                parameters=[{"$ref": "#/components/parameters/afterSeq"}, token, last_event_id],
                security=[{"bearerAuth": []}, {"queryToken": []}],
            ),
        },
        "/api/runs/{id}/rerun": {
            "parameters": [_ID],
            "post": _operation(
                "rerunRun",
                "A new attempt of a FAILED or CANCELLED run, in place, from a node onward",
                "runs",
                {
                    "200": _ok("The run an earlier request with this key resumed.", "Run"),
                    "202": _ok("The resumed run.", "Run", run_links),
                    **one,
                    **_errors(*_WRITE, 409),
                },
                parameters=[
                    {
                        **idempotency_key,
                        "description": "Same key, same run, within 24 h: no new attempt (200).",
                    }
                ],
                requestBody=_body("RerunInput", required=False),
            ),
        },
        "/api/runs/{id}/steps/{nodeId}/approve": {
            "parameters": [
                _ID,
                {
                    "name": "nodeId",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "The APPROVAL node waiting for a decision.",
                },
            ],
            "post": _operation(
                "resolveApproval",
                "Approve or reject a waiting APPROVAL step (its approvers only)",
                "runs",
                {
                    "200": _ok("The run, the step resolved.", "Run", run_links),
                    **one,
                    **_errors(*_WRITE, 403, 409),
                },
                requestBody=_body("ApprovalInput"),
            ),
        },
        "/api/runs/{id}/cancel": {
            "parameters": [_ID],
            "post": _operation(
                "cancelRun",
                "Cancel a run that has not finished",
                "runs",
                {"200": _ok("The cancelled run.", "Run"), **one, **_errors(409)},
            ),
        },
    }


def _trigger_paths() -> dict[str, Schema]:
    signature = {
        "name": "X-Treadle-Signature",
        "in": "header",
        "required": True,
        "schema": {"type": "string"},
        "description": (
            't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"> with the trigger\'s '
            "secret; refused (401) when more than 5 minutes off."
        ),
    }
    hook_body = {
        "required": False,
        "content": {JSON_MEDIA: {"schema": {"type": "object", "description": "The run's input."}}},
    }
    return {
        "/api/workflows/{id}/triggers": {
            "parameters": [_ID],
            "get": _operation(
                "listWorkflowTriggers",
                "The workflow's triggers (webhook secrets for ADMINs only)",
                "workflows",
                {"200": _ok("The triggers.", "TriggerList"), **_errors(*_AUTHED, 404)},
            ),
        },
        "/api/hooks/{triggerId}": {
            "parameters": [
                {
                    "name": "triggerId",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                    "description": "A webhook trigger's id (see listWorkflowTriggers).",
                }
            ],
            "post": _operation(
                "receiveHook",
                "Start a run of the trigger's workflow with the signed JSON body as input",
                "runs",
                {
                    "200": _ok("The run this same signed request started before.", "Run"),
                    "202": _ok("The new run.", "Run"),
                    **_errors(*_WRITE, 401, 404, 429),
                },
                security=_PUBLIC,
                parameters=[signature],
                requestBody=hook_body,
            ),
        },
    }


def _meta_paths() -> dict[str, Schema]:
    return {
        "/api/health": {
            "get": _operation(
                "health",
                "Health of the database and the queue",
                "meta",
                {
                    "200": _ok("Every part is up.", "Health"),
                    "503": _ok("A part is down.", "Health"),
                },
                security=_PUBLIC,
            )
        },
        OPENAPI_PATH: {
            "get": _operation(
                "openapi",
                "This document",
                "meta",
                {
                    "200": {
                        "description": "The OpenAPI 3.1 description of the REST aliases.",
                        "content": {JSON_MEDIA: {"schema": {"type": "object"}}},
                    }
                },
                security=_PUBLIC,
            )
        },
    }


def build_openapi(registry: StepRegistry) -> Schema:
    """The OpenAPI 3.1 document of the REST aliases; node configs come from ``registry``."""
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
        "paths": {
            **_auth_paths(),
            **_workflow_paths(),
            **_trigger_paths(),
            **_run_paths(),
            **_meta_paths(),
        },
        "components": {
            "schemas": {
                **_input_schemas(),
                **_definition_schemas(registry),
                **_view_schemas(),
            },
            "parameters": _parameters(),
            "responses": _responses(),
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "queryToken": {"type": "apiKey", "in": "query", "name": "token"},
            },
        },
    }


async def openapi_json(request: Request) -> JSONResponse:
    """``GET /api/openapi.json``: built once per application, on first use."""
    state = request.app.state
    document: Schema | None = getattr(state, "openapi_document", None)
    if document is None:
        resources: Resources = request.state.resources
        document = build_openapi(resources.registry)
        state.openapi_document = document
    return JSONResponse(document)
