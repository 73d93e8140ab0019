"""REST handlers of runs: start, list, read, follow, cancel, rerun, approve."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from treadle.rest import request as req
from treadle.rest.operation import Schema, operation
from treadle.rest.params import INT_MAX
from treadle.rest.schemas import ApprovalInput, EventList, ExecuteInput, RerunInput, RunPage
from treadle.rest.stream import stream_run_events
from treadle.services import approval, rerun, runs
from treadle.services.views import RunView


def _param(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


IDEMPOTENCY_KEY: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "The same key within 24 h returns the run it started (200).",
}
RERUN_KEY: Final = {
    **IDEMPOTENCY_KEY,
    "description": "Same key, same run, within 24 h: no new attempt (200).",
}
LAST_EVENT_ID: Final = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "integer", "minimum": 0, "maximum": INT_MAX},
    "description": "Resume after this seq (sent by a reconnecting EventSource).",
}
TOKEN: Final = {
    "name": "token",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "The JWT, for clients that cannot set headers.",
}
STREAM_OK: Final = {
    # A string: generated clients read the stream as text (an object schema made them parse
    # it as JSON and crash). The StreamEvent component describes each event, for readers.
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "string",
                "description": "Server-Sent Events; each is one `StreamEvent`.",
            }
        }
    }
}
RUN_LINKS: Final = {
    "getRun": "getRun",
    "listRunEvents": "listRunEvents",
    "streamRunEvents": "streamRunEvents",
    "cancelRun": "cancelRun",
}


def started(result: runs.Execution) -> Response:
    """A run a request started (202), or the one an earlier same request started (200)."""
    return JSONResponse(result.run.to_json(), status_code=202 if result.created else 200)


@operation(
    "POST",
    "/api/workflows/{id}/execute",
    "executeWorkflow",
    summary="Start a run of the workflow's current version",
    tag="runs",
    ok={
        200: ("The run an earlier request with this key started.", RunView),
        202: ("The new run.", RunView),
    },
    errors=(404,),
    body=ExecuteInput,
    body_required=False,
    parameters=(IDEMPOTENCY_KEY,),
    links=RUN_LINKS,
)
async def execute_workflow(request: Request) -> Response:
    body = await req.body(request)
    key = request.headers.get("idempotency-key")
    async with req.service(request) as ctx:
        result = await runs.execute_workflow(ctx, request.path_params["id"], body.get("input"), key)
    return started(result)


@operation(
    "GET",
    "/api/workflows/{id}/runs",
    "listWorkflowRuns",
    summary="The workflow's runs, newest first (without steps)",
    tag="runs",
    ok={200: ("One page of runs.", RunPage)},
    errors=(400, 404),
    parameters=(_param("page"), _param("pageSize"), _param("status")),
)
async def list_workflow_runs(request: Request) -> Response:
    page, size = req.query_int(request, "page", 1), req.query_int(request, "pageSize", 20)
    status = request.query_params.get("status")
    async with req.service(request) as ctx:
        result = await runs.list_runs(ctx, request.path_params["id"], status, page, size)
    body = RunPage(items=result.items, page=page, page_size=result.page_size, total=result.total)
    return JSONResponse(body.to_json())


@operation(
    "GET",
    "/api/runs/{id}",
    "getRun",
    summary="One run with its steps",
    tag="runs",
    ok={200: ("The run.", RunView)},
    errors=(404,),
)
async def get_run(request: Request) -> Response:
    async with req.service(request) as ctx:
        view = await runs.get_run(ctx, request.path_params["id"])
    return JSONResponse(view.to_json())


@operation(
    "GET",
    "/api/runs/{id}/events",
    "listRunEvents",
    summary="The run's stored events, in seq order",
    tag="runs",
    ok={200: ("The events.", EventList)},
    errors=(400, 404),
    parameters=(_param("afterSeq"), _param("limit")),
)
async def list_run_events(request: Request) -> Response:
    after, limit = req.query_int(request, "afterSeq", 0), req.query_int(request, "limit", 100)
    async with req.service(request) as ctx:
        events = await runs.list_events(ctx, request.path_params["id"], after, limit)
    return JSONResponse(EventList(items=tuple(events)).to_json())


stream = operation(
    "GET",
    "/api/runs/{id}/stream",
    "streamRunEvents",
    summary="The run's events as Server-Sent Events",
    tag="runs",
    ok={200: ("Stored events after `afterSeq`, then live ones; ends after the last.", STREAM_OK)},
    errors=(400, 404),
    parameters=(_param("afterSeq"), TOKEN, LAST_EVENT_ID),
    security=({"bearerAuth": []}, {"queryToken": []}),
)(stream_run_events)


@operation(
    "POST",
    "/api/runs/{id}/cancel",
    "cancelRun",
    summary="Cancel a run that has not finished",
    tag="runs",
    ok={200: ("The cancelled run.", RunView)},
    errors=(404, 409),
)
async def cancel_run(request: Request) -> Response:
    async with req.service(request) as ctx:
        view = await runs.cancel_run(ctx, request.path_params["id"])
    return JSONResponse(view.to_json())


@operation(
    "POST",
    "/api/runs/{id}/rerun",
    "rerunRun",
    summary="A new attempt of a FAILED or CANCELLED run, in place, from a node onward",
    tag="runs",
    ok={
        200: ("The run an earlier request with this key resumed.", RunView),
        202: ("The resumed run.", RunView),
    },
    errors=(404, 409),
    body=RerunInput,
    body_required=False,
    parameters=(RERUN_KEY,),
    links=RUN_LINKS,
)
async def rerun_run(request: Request) -> Response:
    body = await req.body(request)
    key = request.headers.get("idempotency-key")
    async with req.service(request) as ctx:
        result = await rerun.rerun_run(
            ctx, request.path_params["id"], body.get("fromNodeId"), body.get("input"), key
        )
    return started(result)


@operation(
    "POST",
    "/api/runs/{id}/steps/{nodeId}/approve",
    "resolveApproval",
    summary="Approve or reject a waiting APPROVAL step (its approvers only)",
    tag="runs",
    ok={200: ("The run, the step resolved.", RunView)},
    errors=(403, 404, 409),
    body=ApprovalInput,
    links=RUN_LINKS,
)
async def resolve_approval(request: Request) -> Response:
    body = await req.body(request)
    params = request.path_params
    async with req.service(request) as ctx:
        view = await approval.resolve_approval(
            ctx,
            params["id"],
            params["nodeId"],
            body.get("approved"),
            body.get("comment"),
            body.get("data"),
        )
    return JSONResponse(view.to_json())
