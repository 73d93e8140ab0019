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
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from taskiq import InMemoryBroker
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from treadle.errors import RateLimitedError, TreadleError
from treadle.graphiql import graphiql_assets
from treadle.logging import configure_logging, request_id_var
from treadle.metrics import Metrics
from treadle.middleware import BodyLimitMiddleware, RequestContextMiddleware
from treadle.resolvers.build import build_schema
from treadle.resources import Resources
from treadle.rest.feed import run_feed
from treadle.rest.metrics import metrics_routes
from treadle.rest.routes import rest_routes
from treadle.schema.context import TreadleGraphQL
from treadle.settings import Settings
from treadle.tasks.broker import open_runtime
from treadle.tasks.reaper import run_reaper
from treadle.wsframes import FramesMiddleware

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


METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        return await _internal_error(request, exc)
    if exc.status_code == 405:
        allow = ", ".join(_allowed_methods(request)) or (exc.headers or {}).get("Allow", "")
        body = {"error": {"code": METHOD_NOT_ALLOWED, "message": "method not allowed"}}
        return JSONResponse(body, status_code=405, headers={"Allow": allow})
    code = "NOT_FOUND" if exc.status_code == 404 else "VALIDATION_ERROR"
    message = "no such route" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=exc.status_code)


def _allowed_methods(request: Request) -> list[str]:
    """Every method of the path: one path may be several routes (one per method)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return sorted(methods)


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
    origins = _csv(settings.treadle_allowed_origins)
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
        async with open_runtime(settings, embedded=embedded_worker, metrics=metrics) as resources:
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
        WebSocketRoute("/ws", run_feed),  # the tenant's run updates as plain JSON
    ]
    if not settings.is_production:
        routes.append(graphiql_assets())
    middleware = [
        Middleware(FramesMiddleware),  # first: it must see uvicorn's own websocket ``send``
        *_proxies(settings),
        *_cors(settings),
        Middleware(RequestContextMiddleware),
        Middleware(
            BodyLimitMiddleware,
            max_bytes=settings.treadle_max_body_bytes,
            idle_seconds=settings.treadle_body_idle_seconds,
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers=ERROR_HANDLERS,
    )
    # A slash redirect would echo the request's Host header into Location: answer 404 instead.
    app.router.redirect_slashes = False
    return app


def _proxies(settings: Settings) -> list[Middleware]:
    """Take the client address from ``X-Forwarded-For`` only when a trusted proxy sent it.

    ``treadle serve`` turns uvicorn's own proxy handling off (it trusts loopback by default),
    so per-IP limits count the real peer unless ``TREADLE_TRUSTED_PROXIES`` names it.
    """
    trusted = _csv(settings.treadle_trusted_proxies)
    return [Middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)] if trusted else []


def _cors(settings: Settings) -> list[Middleware]:
    """Browser apps on the listed origins may call the API (preflights included)."""
    origins = _csv(settings.treadle_cors_origins)
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
            expose_headers=["X-Request-Id", "Retry-After"],
            max_age=600,
        )
    ]


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


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
