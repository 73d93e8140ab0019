"""Per-request GraphQL context: resources, the caller, and a way to open a service context."""

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types import Info as StrawberryInfo
from strawberry.types.unset import UNSET, UnsetType

from treadle.errors import UnauthenticatedError
from treadle.resources import Resources
from treadle.security import Actor, bearer_token
from treadle.services.context import ServiceContext, open_service_context


@dataclass
class GraphQLContext:
    request: Request | WebSocket
    resources: Resources
    token: str | None = None
    connection_params: dict[str, Any] | None = None
    _actor: Actor | None = field(default=None, init=False)

    @property
    def actor(self) -> Actor:
        """The verified caller; UNAUTHENTICATED when the token is missing or bad."""
        if self._actor is None:
            if not self.token:
                raise UnauthenticatedError("authentication required")
            self._actor = self.resources.tokens.verify(self.token)
        return self._actor

    @contextlib.asynccontextmanager
    async def service(self, *, anonymous: bool = False) -> AsyncIterator[ServiceContext]:
        actor = None if anonymous else self.actor
        async with open_service_context(self.resources, actor) as ctx:
            yield ctx


Info = StrawberryInfo[GraphQLContext, None]


class TreadleGraphQL(GraphQL[GraphQLContext, None]):
    """Strawberry's ASGI view with our context and websocket authentication."""

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GraphQLContext:
        resources: Resources = request.state.resources
        token = bearer_token(request.headers.get("authorization"))
        if isinstance(request, WebSocket):
            token = request.query_params.get("token")
        return GraphQLContext(request=request, resources=resources, token=token)

    async def on_ws_connect(self, context: GraphQLContext) -> UnsetType | dict[str, object] | None:
        params = context.connection_params or {}
        token = params.get("token") if isinstance(params, dict) else None
        if not token and isinstance(params, dict):
            token = bearer_token(
                str(params.get("authorization") or params.get("Authorization") or "")
            )
        context.token = str(token) if token else context.token
        try:
            _ = context.actor
        except UnauthenticatedError as exc:
            raise ConnectionRejectionError({"code": exc.code, "message": exc.message}) from exc
        unset: UnsetType = UNSET
        return unset
