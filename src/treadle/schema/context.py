"""Per-request GraphQL context: resources, the caller, and a way to open a service context."""

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.dataloader import DataLoader
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import DisableIntrospection
from strawberry.http import GraphQLRequestData
from strawberry.schema import BaseSchema
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)
from strawberry.types import Info as StrawberryInfo
from strawberry.types.unset import UNSET, UnsetType

from treadle.errors import TreadleError
from treadle.graphiql import graphiql_page
from treadle.resources import Resources
from treadle.schema.errors import shaped_results, with_codes
from treadle.schema.http import (
    decode_frame,
    error_response,
    parse_request_json,
    refuse_subscription,
)
from treadle.schema.loaders import EventsKey, RunsKey, events_loader, runs_loader
from treadle.security import Actor, bearer_token
from treadle.services import runs
from treadle.services.context import ServiceContext, count_api_call, open_service_context
from treadle.services.views import EventView, Page, RunView, StepView


@dataclass
class GraphQLContext:
    request: Request | WebSocket
    resources: Resources
    token: str | None = None
    connection_params: dict[str, Any] | None = None
    _actor: Actor | None = field(default=None, init=False)
    _steps: "DataLoader[uuid.UUID, tuple[StepView, ...]] | None" = field(default=None, init=False)

    @property
    def steps_loader(self) -> "DataLoader[uuid.UUID, tuple[StepView, ...]]":
        """Batches ``Run.steps`` of a page of runs into one query. Not cached: a websocket's
        context lives as long as the connection, and steps change."""
        if self._steps is None:

            async def load(run_ids: list[uuid.UUID]) -> list[tuple[StepView, ...]]:
                async with self.uncounted_service() as ctx:
                    return await runs.list_steps(ctx, run_ids)

            self._steps = DataLoader(load_fn=load, cache=False)
        return self._steps

    @functools.cached_property
    def runs_loader(self) -> DataLoader[RunsKey, Page[RunView]]:
        """Batches ``Workflow.runs`` of a page of workflows (see ``schema.loaders``)."""
        return runs_loader(self.uncounted_service)

    @functools.cached_property
    def events_loader(self) -> DataLoader[EventsKey, list[EventView]]:
        """Batches ``Run.events`` of a page of runs (see ``schema.loaders``)."""
        return events_loader(self.uncounted_service)

    @property
    def actor(self) -> Actor:
        """The verified caller; UNAUTHENTICATED when the token is missing or bad."""
        if self._actor is None:
            self._actor = self.resources.tokens.authenticate(self.token)
        return self._actor

    @property
    def client_ip(self) -> str | None:
        return self.request.client.host if self.request.client else None

    async def caller(self) -> Actor:
        """The verified caller, counted once against the tenant's API rate limit."""
        await count_api_call(self.resources, self.actor)
        return self.actor

    @contextlib.asynccontextmanager
    async def service(self, *, anonymous: bool = False) -> AsyncIterator[ServiceContext]:
        """For a root field: one count against the API rate limit, so aliases count one by
        one. Nested fields go through the loaders, which do not count again."""
        actor = None if anonymous else await self.caller()
        async with open_service_context(self.resources, actor, client_ip=self.client_ip) as ctx:
            yield ctx

    def uncounted_service(self) -> AbstractAsyncContextManager[ServiceContext]:
        """The caller's service context without a rate-limit count (for the loaders)."""
        return open_service_context(self.resources, self.actor, client_ip=self.client_ip)


Info = StrawberryInfo[GraphQLContext, None]


class _TransportWSHandler(BaseGraphQLTransportWSHandler[GraphQLContext, None]):
    """graphql-transport-ws plus server ``ping`` messages, so idle sockets stay open via proxies."""

    async def handle(self) -> None:
        pinger = asyncio.create_task(self._ping_loop())
        try:
            await super().handle()
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger

    async def run_operation(self, operation: Operation[GraphQLContext, None]) -> None:
        """Plain ``runEvents`` documents take the shared fan-out (``resolvers/fanout.py``)."""
        shared = getattr(self.schema, "shared_run_events", None)
        if shared is None or not await shared.try_serve(self, operation):
            await super().run_operation(operation)

    async def _ping_loop(self) -> None:
        interval = float(getattr(self.view, "ws_ping_seconds", 15.0))
        while True:
            await asyncio.sleep(interval)
            if not self.connection_acknowledged:
                continue
            try:
                await self.send_message({"type": "ping"})
            except Exception:
                return  # the socket is gone; the handler is shutting down

    # Every error sent over the socket carries ``extensions.code``, as over HTTP.
    async def _send_result_stream(self, operation: Any, result_source: Any) -> None:
        hide = DisableIntrospection in getattr(self.schema, "extensions", ())  # production
        shaped = shaped_results(result_source, hide_suggestions=hide)
        await super()._send_result_stream(operation, shaped)

    async def send_message(self, message: Any) -> None:
        await super().send_message(with_codes(message))  # type: ignore[arg-type]


class TreadleGraphQL(GraphQL[GraphQLContext, None]):
    """Strawberry's ASGI view with our context, websocket authentication and server pings."""

    graphql_transport_ws_handler_class = _TransportWSHandler

    def __init__(self, schema: BaseSchema, *, ws_ping_seconds: float = 15.0, **kwargs: Any) -> None:
        super().__init__(schema, **kwargs)
        self.ws_ping_seconds = ws_ping_seconds

    @property
    def graphql_ide_html(self) -> str:
        """Our GraphiQL page, whose assets the app serves itself (Strawberry's uses a CDN)."""
        return graphiql_page()

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GraphQLContext:
        resources: Resources = request.state.resources
        token = bearer_token(request.headers.get("authorization"))
        if isinstance(request, WebSocket):
            token = request.query_params.get("token") or token
        return GraphQLContext(request=request, resources=resources, token=token)

    async def on_ws_connect(self, context: GraphQLContext) -> UnsetType | dict[str, object] | None:
        """Authenticate the socket from ``connection_init``; a bad token closes it with 4403.

        The payload's ``token`` (or ``authorization: Bearer …``) wins over ``?token=`` on the
        URL and the upgrade request's own ``Authorization`` header.
        """
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        token = params.get("token")
        if not token:
            header = params.get("authorization") or params.get("Authorization")
            token = bearer_token(str(header)) if header else None
        if token:
            context.token = str(token)
        try:
            # The token, and the user it names (still there, current role), like any call.
            async with context.service():
                pass
        except TreadleError as exc:
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}) from exc
        unset: UnsetType = UNSET
        return unset

    # Strict JSON and coded errors for GraphQL over HTTP and websockets (see schema/http.py).
    def parse_json(self, data: str | bytes) -> Any:
        return parse_request_json(data)

    def decode_json(self, data: str | bytes) -> object:
        return decode_frame(data)

    async def execute_single(self, *args: Any, **kwargs: Any) -> Any:
        data: GraphQLRequestData = kwargs["request_data"]
        refuse_subscription(data.query, data.operation_name)
        return await super().execute_single(*args, **kwargs)

    async def run(  # type: ignore[override]
        self,
        request: Request | WebSocket,
        context: GraphQLContext | UnsetType = UNSET,
        root_value: UnsetType | None = UNSET,
    ) -> Response | WebSocket:
        try:
            return await super().run(request, context, root_value)  # type: ignore[arg-type]
        except HTTPException as exc:
            return error_response(exc)
