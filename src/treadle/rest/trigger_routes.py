"""REST handlers of triggers: a workflow's trigger list and the signed webhook receiver."""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from treadle.rest import request as req
from treadle.rest.operation import Schema, operation
from treadle.rest.run_routes import started
from treadle.rest.schemas import TriggerList
from treadle.services import hooks
from treadle.services.views import RunView

SIGNATURE: Final = {
    "name": "X-Treadle-Signature",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
    "description": (
        't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>"> with the trigger\'s '
        "secret; refused (401) when more than 5 minutes off."
    ),
}
HOOK_BODY: Final[Schema] = {"type": "object", "description": "The run's input."}


@operation(
    "GET",
    "/api/workflows/{id}/triggers",
    "listWorkflowTriggers",
    summary="The workflow's triggers (webhook secrets for ADMINs only)",
    tag="workflows",
    ok={200: ("The triggers.", TriggerList)},
    errors=(404,),
)
async def list_workflow_triggers(request: Request) -> Response:
    async with req.service(request) as ctx:
        views = await hooks.list_triggers(ctx, request.path_params["id"])
    return JSONResponse(TriggerList(items=tuple(views)).to_json())


@operation(
    "POST",
    "/api/hooks/{triggerId}",
    "receiveHook",
    summary="Start a run of the trigger's workflow with the signed JSON body as input",
    tag="runs",
    ok={
        200: ("The run this same signed request started before.", RunView),
        202: ("The new run.", RunView),
    },
    errors=(401, 404, 429),
    body=HOOK_BODY,
    body_required=False,
    parameters=(SIGNATURE,),
    public=True,
)
async def receive_hook(request: Request) -> Response:
    """No JWT: the trigger's secret signs the request (``X-Treadle-Signature``)."""
    body = await request.body()
    signature = request.headers.get("x-treadle-signature")
    result = await hooks.receive_hook(
        req.resources(request), request.path_params["triggerId"], body, signature
    )
    return started(result)
