"""GraphQL subscriptions: thin adapters over ``services.follow``.

The resolver is a coroutine that returns the event stream rather than a generator itself: the
access check, the subscription limit and the first read happen before it returns, so their
failures reach the client as one graphql-transport-ws ``error`` message (with
``extensions.code``) and never after an event.
"""

import contextlib
from collections.abc import AsyncGenerator

import strawberry
from graphql.error import GraphQLError

from treadle.errors import TreadleError, UnauthenticatedError
from treadle.schema.context import Info
from treadle.schema.errors import shape_error
from treadle.schema.types import RunEvent, RunUpdate
from treadle.security import Actor
from treadle.services import runs
from treadle.services.follow import Item, follow_events
from treadle.services.updates import Update, follow_updates, next_before_expiry


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def run_events(
        self, info: Info, run_id: strawberry.ID, after_seq: int | None = 0
    ) -> AsyncGenerator[RunEvent, None]:
        """Stored events with ``seq > afterSeq``, then live ones; completes after the terminal.

        Another tenant's run is NOT_FOUND; too many live subscriptions is RATE_LIMITED.
        """
        try:
            async with info.context.service() as ctx:
                run = await runs.require_run(ctx, str(run_id))
            start = 0 if after_seq is None else after_seq
            follow = follow_events(info.context.resources, run.tenant_id, run.id, start)
            first = await _first(follow)
        except Exception as exc:
            raise _graphql_error(exc) from exc
        return _stream(first, follow, info.context.actor)

    @strawberry.subscription
    async def run_updates(
        self, info: Info, workflow_id: strawberry.ID | None = None
    ) -> AsyncGenerator[RunUpdate, None]:
        """Live status changes of the tenant's runs (of one workflow, if given): created,
        started, each step's status, finished. Live-only; ``RESYNC`` means refetch.
        """
        try:
            actor = info.context.actor
            wanted = None if workflow_id is None else str(workflow_id)
            follow = follow_updates(info.context.resources, actor, wanted)
            await anext(follow)  # attached (and counted against the tenant's limit)
        except Exception as exc:
            raise _graphql_error(exc) from exc
        return _updates(follow, actor)


async def _first(follow: AsyncGenerator[Item, None]) -> Item | None:
    """Start following (subscribe, check limits, read history) and take the first item."""
    try:
        return await anext(follow)
    except StopAsyncIteration:
        return None


async def _stream(
    first: Item | None, follow: AsyncGenerator[Item, None], actor: Actor
) -> AsyncGenerator[RunEvent, None]:
    """Forward the follower's items; a token that expires mid-stream ends it UNAUTHENTICATED."""
    async with contextlib.aclosing(follow) as items:
        if first is None:
            return
        yield RunEvent.from_item(first)
        try:
            async for item in items:
                if actor.expired():
                    raise UnauthenticatedError("token expired; subscribe again with a new one")
                yield RunEvent.from_item(item)
        except Exception as exc:
            raise _graphql_error(exc) from exc


async def _updates(
    follow: AsyncGenerator[Update | None, None], actor: Actor
) -> AsyncGenerator[RunUpdate, None]:
    async with contextlib.aclosing(follow) as items:
        try:
            while True:
                update = await next_before_expiry(items, actor)
                if update is not None:
                    yield RunUpdate.from_json(update)
        except StopAsyncIteration:
            return
        except Exception as exc:
            raise _graphql_error(exc) from exc


def _graphql_error(exc: Exception) -> GraphQLError:
    """Subscriptions skip the DomainErrors pass: attach the code here, mask the unexpected."""
    message = exc.message if isinstance(exc, TreadleError) else str(exc)
    return shape_error(GraphQLError(message, original_error=exc))
