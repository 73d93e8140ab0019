"""The ASGI application: REST aliases, GraphQL over HTTP and websockets, error handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from taskiq import InMemoryBroker

from treadle.errors import RateLimitedError, TreadleError
from treadle.logging import configure_logging, request_id_var
from treadle.metrics import Metrics
from treadle.middleware import BodyLimitMiddleware, RequestContextMiddleware
from treadle.resources import Resources, open_resources
from treadle.rest.metrics import metrics_routes
from treadle.rest.routes import rest_routes
from treadle.schema.build import build_schema
from treadle.schema.context import TreadleGraphQL
from treadle.settings import Settings
from treadle.tasks.reaper import run_reaper

logger = logging.getLogger(__name__)
DRAIN_SECONDS = 30.0


def error_response(exc: TreadleError) -> JSONResponse:
    headers = {}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(exc.retry_after)
    body = {"error": {"code": exc.code, "message": exc.message}}
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


async def _treadle_error(_request: Request, exc: Exception) -> Response:
    return (
        error_response(exc)
        if isinstance(exc, TreadleError)
        else await _internal_error(_request, exc)
    )


async def _http_error(_request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        return await _internal_error(_request, exc)
    code = {404: "NOT_FOUND", 405: "NOT_FOUND"}.get(exc.status_code, "VALIDATION_ERROR")
    message = "no such route" if exc.status_code in (404, 405) else str(exc.detail)
    status = 404 if exc.status_code == 405 else exc.status_code
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _internal_error(request: Request, exc: Exception) -> Response:
    request_id = request_id_var.get() or getattr(request.state, "request_id", None)
    logger.error("unhandled error (request %s)", request_id, exc_info=exc)
    body = {"error": {"code": "INTERNAL", "message": "internal error", "requestId": request_id}}
    headers = {"X-Request-Id": request_id} if request_id else None
    return JSONResponse(body, status_code=500, headers=headers)


ERROR_HANDLERS = {
    TreadleError: _treadle_error,
    HTTPException: _http_error,
    Exception: _internal_error,
}


def create_app(settings: Settings | None = None, *, embedded_worker: bool = False) -> Starlette:
    """The API; with ``embedded_worker`` it also runs steps and the reaper in this process."""
    settings = settings or Settings()
    configure_logging(settings.log_level, secrets=[settings.jwt_secret, settings.openai_api_key])
    origins = [o.strip() for o in settings.treadle_allowed_origins.split(",") if o.strip()]
    graphql = TreadleGraphQL(
        build_schema(production=settings.is_production),
        graphql_ide=None if settings.is_production else "graphiql",
        allowed_origins=origins,
        connection_init_wait_timeout=timedelta(seconds=settings.treadle_ws_init_timeout_seconds),
        max_subscriptions_per_connection=settings.treadle_max_subscriptions_per_connection,
        ws_ping_seconds=settings.treadle_ws_ping_seconds,
    )

    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Resources]]:
        async with open_resources(settings, embedded=embedded_worker, metrics=metrics) as resources:
            metrics.watch_subscribers(lambda: resources.bus.stats().subscriptions)
            if not embedded_worker:
                yield {"resources": resources}
                return
            async with run_reaper(resources):
                yield {"resources": resources}
            await _drain(resources)

    routes = [
        *rest_routes(),
        *metrics_routes(),
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
    ]
    middleware = [
        Middleware(RequestContextMiddleware),
        Middleware(BodyLimitMiddleware, max_bytes=settings.treadle_max_body_bytes),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=ERROR_HANDLERS,
    )


async def _drain(resources: Resources) -> None:
    """Embedded mode: let in-flight steps finish before the database goes away."""
    broker = resources.broker
    if isinstance(broker, InMemoryBroker):
        try:
            await asyncio.wait_for(broker.wait_all(), DRAIN_SECONDS)
        except TimeoutError:
            logger.warning(
                "steps still running after %.0fs; the reaper resumes them", DRAIN_SECONDS
            )


def create_dev_app() -> Starlette:
    """``treadle dev``: the API plus an in-process worker, on the environment's settings."""
    return create_app(Settings(), embedded_worker=True)
