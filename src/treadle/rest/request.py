"""What every REST handler reads from its request: the caller, the body, query integers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

from treadle import jsoncheck
from treadle.errors import ValidationError
from treadle.resources import Resources
from treadle.rest.params import parse_int
from treadle.security import Actor, bearer_token
from treadle.services.context import ServiceContext, count_api_call, open_service_context


def resources(request: Request) -> Resources:
    found: Resources = request.state.resources
    return found


@contextlib.asynccontextmanager
async def service(request: Request) -> AsyncIterator[ServiceContext]:
    actor = await caller(request)
    async with open_service_context(resources(request), actor, client_ip=client_ip(request)) as ctx:
        yield ctx


async def caller(request: Request) -> Actor:
    """The authenticated caller, counted once against the tenant's API rate limit."""
    found = resources(request)
    actor = found.tokens.authenticate(bearer_token(request.headers.get("authorization")))
    await count_api_call(found, actor)
    return actor


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def body(request: Request) -> dict[str, Any]:
    # Strict: NaN, 1e400, NUL, lone surrogates and deep nesting are refused here.
    data = jsoncheck.loads(await request.body() or b"{}")
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object")
    return data


def query_int(request: Request, name: str, default: int) -> int:
    return parse_int(request.query_params.get(name), name, default)
