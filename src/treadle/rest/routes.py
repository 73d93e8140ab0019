"""REST aliases: parse the request, call one service function, dump its view."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from treadle import jsoncheck
from treadle.errors import ValidationError
from treadle.resources import Resources
from treadle.rest.openapi import openapi_json
from treadle.rest.params import parse_int
from treadle.rest.stream import stream_run_events
from treadle.security import Actor, bearer_token
from treadle.services import approval, auth, hooks, rerun, runs, workflows
from treadle.services.context import ServiceContext, count_api_call, open_service_context
from treadle.services.health import check_health
from treadle.services.views import Page

Handler = Callable[[Request], Awaitable[Response]]


def _resources(request: Request) -> Resources:
    resources: Resources = request.state.resources
    return resources


@contextlib.asynccontextmanager
async def _service(request: Request) -> AsyncIterator[ServiceContext]:
    actor = await _caller(request)
    async with open_service_context(
        _resources(request), actor, client_ip=_client_ip(request)
    ) as ctx:
        yield ctx


async def _caller(request: Request) -> Actor:
    """The authenticated caller, counted once against the tenant's API rate limit."""
    resources = _resources(request)
    actor = resources.tokens.authenticate(bearer_token(request.headers.get("authorization")))
    await count_api_call(resources, actor)
    return actor


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _body(request: Request) -> dict[str, Any]:
    # Strict: NaN, 1e400, NUL, lone surrogates and deep nesting are refused here.
    data = jsoncheck.loads(await request.body() or b"{}")
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object")
    return data


def _int(request: Request, name: str, default: int) -> int:
    return parse_int(request.query_params.get(name), name, default)


def _page(page: Page[Any]) -> dict[str, Any]:
    return {
        "items": [item.to_json() for item in page.items],
        "page": page.page,
        "pageSize": page.page_size,
        "total": page.total,
    }


async def register(request: Request) -> Response:
    body = await _body(request)
    view = await auth.register(_resources(request), body, client_ip=_client_ip(request))
    return JSONResponse(view.to_json(), status_code=201)


async def login(request: Request) -> Response:
    body = await _body(request)
    view = await auth.login(_resources(request), body, client_ip=_client_ip(request))
    return JSONResponse(view.to_json())


async def create_user(request: Request) -> Response:
    body = await _body(request)
    view = await auth.create_user(_resources(request), await _caller(request), body)
    return JSONResponse(view.to_json(), status_code=201)


async def me(request: Request) -> Response:
    async with _service(request) as ctx:
        view = await auth.get_me(ctx)
    return JSONResponse(view.to_json())


async def list_workflows(request: Request) -> Response:
    page, size = _int(request, "page", 1), _int(request, "pageSize", 20)
    async with _service(request) as ctx:
        result = await workflows.list_workflows(ctx, page, size)
    return JSONResponse(_page(result))


async def create_workflow(request: Request) -> Response:
    body = await _body(request)
    async with _service(request) as ctx:
        view = await workflows.create_workflow(ctx, body)
    return JSONResponse(view.to_json(), status_code=201)


async def get_workflow(request: Request) -> Response:
    async with _service(request) as ctx:
        view = await workflows.get_workflow(ctx, request.path_params["id"])
    return JSONResponse(view.to_json())


async def update_workflow(request: Request) -> Response:
    body = await _body(request)
    async with _service(request) as ctx:
        view = await workflows.update_workflow(ctx, request.path_params["id"], body)
    return JSONResponse(view.to_json())


async def delete_workflow(request: Request) -> Response:
    async with _service(request) as ctx:
        await workflows.delete_workflow(ctx, request.path_params["id"])
    return Response(status_code=204)


async def execute_workflow(request: Request) -> Response:
    body = await _body(request)
    key = request.headers.get("idempotency-key")
    async with _service(request) as ctx:
        result = await runs.execute_workflow(ctx, request.path_params["id"], body.get("input"), key)
    return JSONResponse(result.run.to_json(), status_code=202 if result.created else 200)


async def list_workflow_runs(request: Request) -> Response:
    page, size = _int(request, "page", 1), _int(request, "pageSize", 20)
    status = request.query_params.get("status")
    async with _service(request) as ctx:
        result = await runs.list_runs(ctx, request.path_params["id"], status, page, size)
    return JSONResponse(_page(result))


async def get_run(request: Request) -> Response:
    async with _service(request) as ctx:
        view = await runs.get_run(ctx, request.path_params["id"])
    return JSONResponse(view.to_json())


async def list_run_events(request: Request) -> Response:
    after, limit = _int(request, "afterSeq", 0), _int(request, "limit", 100)
    async with _service(request) as ctx:
        events = await runs.list_events(ctx, request.path_params["id"], after, limit)
    return JSONResponse({"items": [event.to_json() for event in events]})


async def cancel_run(request: Request) -> Response:
    async with _service(request) as ctx:
        view = await runs.cancel_run(ctx, request.path_params["id"])
    return JSONResponse(view.to_json())


async def rerun_run(request: Request) -> Response:
    body = await _body(request)
    key = request.headers.get("idempotency-key")
    async with _service(request) as ctx:
        result = await rerun.rerun_run(
            ctx, request.path_params["id"], body.get("fromNodeId"), body.get("input"), key
        )
    return JSONResponse(result.run.to_json(), status_code=202 if result.created else 200)


async def resolve_approval(request: Request) -> Response:
    body = await _body(request)
    params = request.path_params
    async with _service(request) as ctx:
        view = await approval.resolve_approval(
            ctx,
            params["id"],
            params["nodeId"],
            body.get("approved"),
            body.get("comment"),
            body.get("data"),
        )
    return JSONResponse(view.to_json())


async def list_workflow_triggers(request: Request) -> Response:
    async with _service(request) as ctx:
        views = await hooks.list_triggers(ctx, request.path_params["id"])
    return JSONResponse({"items": [view.to_json() for view in views]})


async def receive_hook(request: Request) -> Response:
    """No JWT: the trigger's secret signs the request (``X-Treadle-Signature``)."""
    body = await request.body()
    signature = request.headers.get("x-treadle-signature")
    result = await hooks.receive_hook(
        _resources(request), request.path_params["triggerId"], body, signature
    )
    return JSONResponse(result.run.to_json(), status_code=202 if result.created else 200)


async def health(request: Request) -> Response:
    view = await check_health(_resources(request))
    return JSONResponse(view.to_json(), status_code=200 if view.status == "ok" else 503)


def rest_routes() -> list[Route]:
    return [
        Route("/api/auth/register", register, methods=["POST"]),
        Route("/api/auth/login", login, methods=["POST"]),
        Route("/api/users", create_user, methods=["POST"]),
        Route("/api/me", me, methods=["GET"]),
        Route("/api/workflows", list_workflows, methods=["GET"]),
        Route("/api/workflows", create_workflow, methods=["POST"]),
        Route("/api/workflows/{id}", get_workflow, methods=["GET"]),
        Route("/api/workflows/{id}", update_workflow, methods=["PUT"]),
        Route("/api/workflows/{id}", delete_workflow, methods=["DELETE"]),
        Route("/api/workflows/{id}/execute", execute_workflow, methods=["POST"]),
        Route("/api/workflows/{id}/runs", list_workflow_runs, methods=["GET"]),
        Route("/api/workflows/{id}/triggers", list_workflow_triggers, methods=["GET"]),
        Route("/api/hooks/{triggerId}", receive_hook, methods=["POST"]),
        Route("/api/runs/{id}", get_run, methods=["GET"]),
        Route("/api/runs/{id}/events", list_run_events, methods=["GET"]),
        Route("/api/runs/{id}/stream", stream_run_events, methods=["GET"]),
        Route("/api/runs/{id}/cancel", cancel_run, methods=["POST"]),
        Route("/api/runs/{id}/rerun", rerun_run, methods=["POST"]),
        Route("/api/runs/{id}/steps/{nodeId}/approve", resolve_approval, methods=["POST"]),
        Route("/api/health", health, methods=["GET"]),
        Route("/api/openapi.json", openapi_json, methods=["GET"]),
    ]
