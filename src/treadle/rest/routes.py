"""REST aliases: parse the request, call one service function, dump its view.

Each handler carries its ``@operation`` declaration (``rest/operation.py``); ``rest_routes()``
serves exactly the declared handlers and ``GET /api/openapi.json`` documents exactly them.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from treadle.rest import request as req
from treadle.rest.openapi import build_openapi
from treadle.rest.operation import Handler, Schema, operation, route
from treadle.rest.run_routes import (
    cancel_run,
    execute_workflow,
    get_run,
    list_run_events,
    list_workflow_runs,
    rerun_run,
    resolve_approval,
    stream,
)
from treadle.rest.schemas import (
    CreateUserInput,
    LoginInput,
    RegisterInput,
    WorkflowInput,
    WorkflowPage,
    WorkflowUpdateInput,
)
from treadle.rest.trigger_routes import list_workflow_triggers, receive_hook
from treadle.services import auth, workflows
from treadle.services.health import HealthView, check_health
from treadle.services.views import AuthView, UserView, WorkflowView

OPENAPI_PATH: Final = "/api/openapi.json"
AUTH_OK: Final = "The new token, its user and tenant."
WORKFLOW_LINKS: Final = {
    name: name
    for name in (
        "getWorkflow",
        "updateWorkflow",
        "deleteWorkflow",
        "executeWorkflow",
        "listWorkflowRuns",
    )
}
PAGING: Final = (
    {"$ref": "#/components/parameters/page"},
    {"$ref": "#/components/parameters/pageSize"},
)


@operation(
    "POST",
    "/api/auth/register",
    "register",
    summary="Create a tenant and its first user (an ADMIN)",
    tag="auth",
    ok={201: (AUTH_OK, AuthView)},
    errors=(409, 429),
    body=RegisterInput,
    public=True,
)
async def register(request: Request) -> Response:
    body = await req.body(request)
    view = await auth.register(req.resources(request), body, client_ip=req.client_ip(request))
    return JSONResponse(view.to_json(), status_code=201)


@operation(
    "POST",
    "/api/auth/login",
    "login",
    summary="Exchange an email and password for a token",
    tag="auth",
    ok={200: (AUTH_OK, AuthView)},
    errors=(401, 429),
    body=LoginInput,
    public=True,
)
async def login(request: Request) -> Response:
    body = await req.body(request)
    view = await auth.login(req.resources(request), body, client_ip=req.client_ip(request))
    return JSONResponse(view.to_json())


@operation(
    "POST",
    "/api/users",
    "createUser",
    summary="Add a user to the caller's tenant (ADMIN only)",
    tag="auth",
    ok={201: ("The new user.", UserView)},
    errors=(403, 409),
    body=CreateUserInput,
)
async def create_user(request: Request) -> Response:
    body = await req.body(request)
    view = await auth.create_user(req.resources(request), await req.caller(request), body)
    return JSONResponse(view.to_json(), status_code=201)


@operation(
    "GET",
    "/api/me",
    "me",
    summary="The calling user",
    tag="auth",
    ok={200: ("The user.", UserView)},
)
async def me(request: Request) -> Response:
    async with req.service(request) as ctx:
        view = await auth.get_me(ctx)
    return JSONResponse(view.to_json())


@operation(
    "GET",
    "/api/workflows",
    "listWorkflows",
    summary="The tenant's workflows, newest first",
    tag="workflows",
    ok={200: ("One page of workflows.", WorkflowPage)},
    errors=(400,),
    parameters=PAGING,
)
async def list_workflows(request: Request) -> Response:
    page, size = req.query_int(request, "page", 1), req.query_int(request, "pageSize", 20)
    async with req.service(request) as ctx:
        result = await workflows.list_workflows(ctx, page, size)
    body = WorkflowPage(
        items=result.items, page=result.page, page_size=result.page_size, total=result.total
    )
    return JSONResponse(body.to_json())


@operation(
    "POST",
    "/api/workflows",
    "createWorkflow",
    summary="Create a workflow (version 1)",
    tag="workflows",
    ok={201: ("The workflow.", WorkflowView)},
    body=WorkflowInput,
    links=WORKFLOW_LINKS,
)
async def create_workflow(request: Request) -> Response:
    body = await req.body(request)
    async with req.service(request) as ctx:
        view = await workflows.create_workflow(ctx, body)
    return JSONResponse(view.to_json(), status_code=201)


@operation(
    "GET",
    "/api/workflows/{id}",
    "getWorkflow",
    summary="One workflow",
    tag="workflows",
    ok={200: ("The workflow.", WorkflowView)},
    errors=(404,),
)
async def get_workflow(request: Request) -> Response:
    async with req.service(request) as ctx:
        view = await workflows.get_workflow(ctx, request.path_params["id"])
    return JSONResponse(view.to_json())


@operation(
    "PUT",
    "/api/workflows/{id}",
    "updateWorkflow",
    summary="Change any subset of name, description and definition (version + 1)",
    tag="workflows",
    ok={200: ("The updated workflow.", WorkflowView)},
    errors=(404,),
    body=WorkflowUpdateInput,
    body_required=False,  # none: {}
)
async def update_workflow(request: Request) -> Response:
    body = await req.body(request)
    async with req.service(request) as ctx:
        view = await workflows.update_workflow(ctx, request.path_params["id"], body)
    return JSONResponse(view.to_json())


@operation(
    "DELETE",
    "/api/workflows/{id}",
    "deleteWorkflow",
    summary="Soft-delete a workflow (its past runs remain)",
    tag="workflows",
    ok={204: ("Deleted.", None)},
    errors=(404,),
)
async def delete_workflow(request: Request) -> Response:
    async with req.service(request) as ctx:
        await workflows.delete_workflow(ctx, request.path_params["id"])
    return Response(status_code=204)


@operation(
    "GET",
    "/api/health",
    "health",
    summary="Health of the database and the queue",
    tag="meta",
    ok={200: ("Every part is up.", HealthView), 503: ("A part is down.", HealthView)},
    public=True,
)
async def health(request: Request) -> Response:
    view = await check_health(req.resources(request))
    return JSONResponse(view.to_json(), status_code=200 if view.status == "ok" else 503)


OPENAPI_OK: Final = {"content": {"application/json": {"schema": {"type": "object"}}}}


@operation(
    "GET",
    OPENAPI_PATH,
    "openapi",
    summary="This document",
    tag="meta",
    ok={200: ("The OpenAPI 3.1 description of the REST aliases.", OPENAPI_OK)},
    public=True,
)
async def openapi_json(request: Request) -> Response:
    """``GET /api/openapi.json``: built once per application, on first use."""
    state = request.app.state
    document: Schema | None = getattr(state, "openapi_document", None)
    if document is None:
        document = build_openapi(req.resources(request).registry, rest_routes())
        state.openapi_document = document
    return JSONResponse(document)


HANDLERS: Final[list[Handler]] = [
    register,
    login,
    create_user,
    me,
    list_workflows,
    create_workflow,
    get_workflow,
    update_workflow,
    delete_workflow,
    execute_workflow,
    list_workflow_runs,
    list_workflow_triggers,
    receive_hook,
    get_run,
    list_run_events,
    stream,
    cancel_run,
    rerun_run,
    resolve_approval,
    health,
    openapi_json,
]


def rest_routes() -> list[Route]:
    return [route(handler) for handler in HANDLERS]
