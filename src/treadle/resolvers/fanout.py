"""``runEvents`` over graphql-transport-ws, executed once per event and document, not per socket.

Strawberry executes a subscription's selection set for every event of every subscriber and
serialises each result on its own; with a thousand watchers of one run that is most of the cost.
This module serves the common case on a shared path:

Invariants:
- Only a plain ``runEvents`` document is served here: one subscription operation with no
  directives, its one root field ``runEvents``, and a flat selection of ``RunEvent`` fields (no
  fragments, no directives), that passes the schema's validation, the token and alias limits,
  and whose variables coerce. Everything else (and every failure to plan) goes through
  Strawberry unchanged, so its errors read exactly as before.
- Ordering, replay, gap filling and overflow stay ``services.follow``'s, per subscriber.
- A ``next`` payload is computed once per (document, run, seq) in this process, serialised
  once, and kept in a bounded cache with its websocket frames (one per operation-id prefix);
  each subscriber writes those bytes. Live-only deltas (no ``seq``) are keyed by the message
  object they came in.
- A caught-up subscriber gets live events inline (``services.follow``'s sink): the frame is
  written to the socket in the call that received the message (``wsframes``), with no task
  switch per subscriber; a socket that cannot take it now (paused, closing, another server)
  gets it through the normal path instead. The terminal event goes the same way.
- Access checks and errors are the resolver's: another tenant's run is NOT_FOUND, the limits are
  RATE_LIMITED, and a token that expires ends the stream with UNAUTHENTICATED, quiet run or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    parse,
    validate,
)
from graphql.execution import Executor, execute_subscription_event
from graphql.execution.values import get_argument_values

from treadle.errors import TreadleError, UnauthenticatedError
from treadle.schema.errors import shape_error
from treadle.schema.types import RunEvent
from treadle.security import Actor
from treadle.services import runs
from treadle.services.follow import Item, follow_events
from treadle.services.views import EventView
from treadle.wsframes import FrameWriter, text_frame, writer_for

if TYPE_CHECKING:
    from treadle.schema.context import GraphQLContext

logger = logging.getLogger(__name__)

FIELD: Final = "runEvents"
PLANS: Final = 256
PAYLOADS: Final = 16_384  # (document, run, seq) results kept; a few hundred bytes each


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated plain ``runEvents`` document."""

    key: str
    document: DocumentNode
    operation_name: str | None
    field: GraphQLField
    node: FieldNode


class Shaped:
    """One event's ``next`` payload for one document: its text, and frames by id prefix."""

    __slots__ = ("data", "frames", "item", "text")

    def __init__(self, item: object, text: str) -> None:
        self.item = item  # a delta's message (deltas are keyed by identity), else None
        self.text = text
        self.data = text.encode()
        self.frames: dict[bytes, bytes] = {}

    def frame(self, prefix: bytes) -> bytes:
        """The websocket frame of ``prefix + payload + "}"``, built once per prefix."""
        frame = self.frames.get(prefix)
        if frame is None:
            frame = self.frames[prefix] = text_frame(prefix + self.data + b"}")
        return frame


@dataclass(frozen=True, slots=True)
class Limits:
    max_tokens: int
    max_aliases: int


def build_plan(
    schema: GraphQLSchema, query: str, operation_name: str | None, limits: Limits
) -> Plan | None:
    """The plan of a plain ``runEvents`` document, or None (Strawberry serves it then)."""
    try:
        document = parse(query, max_tokens=limits.max_tokens)
    except GraphQLError:
        return None
    node = _root_field(document, operation_name)
    subscription = schema.subscription_type
    if node is None or subscription is None or FIELD not in subscription.fields:
        return None
    selections = node.selection_set.selections if node.selection_set else ()
    aliases = sum(1 for s in selections if isinstance(s, FieldNode) and s.alias)
    if aliases + (1 if node.alias else 0) > limits.max_aliases or validate(schema, document):
        return None
    return Plan(query, document, operation_name, subscription.fields[FIELD], node)


def _root_field(document: DocumentNode, operation_name: str | None) -> FieldNode | None:
    if len(document.definitions) != 1:
        return None
    operation = document.definitions[0]
    if (
        not isinstance(operation, OperationDefinitionNode)
        or operation.operation != OperationType.SUBSCRIPTION
        or operation.directives
        or (operation_name is not None and getattr(operation.name, "value", None) != operation_name)
        or len(operation.selection_set.selections) != 1
    ):
        return None
    node = operation.selection_set.selections[0]
    if (
        not isinstance(node, FieldNode)
        or node.name.value != FIELD
        or node.directives
        or node.selection_set is None
    ):
        return None
    for child in node.selection_set.selections:
        if not isinstance(child, FieldNode) or child.directives or child.selection_set:
            return None
    return node


class SharedRunEvents:
    """One per GraphQL view (process): plans by document, serialised payloads by event."""

    def __init__(self, schema: GraphQLSchema, limits: Limits) -> None:
        self._schema = schema
        self._limits = limits
        self._plans: OrderedDict[tuple[str, str | None], Plan | None] = OrderedDict()
        self._payloads: OrderedDict[tuple[Any, ...], Shaped] = OrderedDict()
        self._last: tuple[object, str, Shaped] | None = None  # the last item shaped, by identity
        self._access: OrderedDict[tuple[uuid.UUID, str], uuid.UUID] = OrderedDict()
        self.executions = 0  # selection sets executed (for tests and stats)

    def plan(self, query: str, operation_name: str | None) -> Plan | None:
        key = (query, operation_name)
        if key in self._plans:
            self._plans.move_to_end(key)
            return self._plans[key]
        plan = build_plan(self._schema, query, operation_name, self._limits)
        self._plans[key] = plan
        if len(self._plans) > PLANS:
            self._plans.popitem(last=False)
        return plan

    def executor(
        self, plan: Plan, context: GraphQLContext, variables: dict[str, Any] | None
    ) -> Executor[Any] | None:
        built = Executor.build(
            self._schema,
            plan.document,
            context_value=context,
            raw_variable_values=variables,
            operation_name=plan.operation_name,
        )
        return built if isinstance(built, Executor) else None  # bad variables: Strawberry's

    def arguments(self, plan: Plan, executor: Executor[Any]) -> dict[str, Any]:
        return get_argument_values(plan.field, plan.node, executor.variable_values)

    async def try_serve(self, handler: Any, operation: Any) -> bool:
        """Serve ``operation`` here when its document is a plain ``runEvents``; else False."""
        plan = self.plan(operation.query, operation.operation_name)
        if plan is None:
            return False
        executor = self.executor(plan, handler.context, operation.variables)
        if executor is None:
            return False
        socket = handler.context.request
        channel = Channel(operation, socket.send_text, writer_for(socket))
        try:
            await serve(self, plan, executor, handler.context, channel)
        except Exception:
            # The socket went away mid-write: the handler's shutdown cleans up the rest.
            logger.debug("shared runEvents operation ended early", exc_info=True)
        if not operation.completed:
            handler.operations.pop(operation.id, None)
        return True

    async def run_access(self, context: GraphQLContext, actor: Actor, run_id: str) -> uuid.UUID:
        """The run's id once the caller's tenant may see it (NOT_FOUND otherwise).

        A run never changes tenant, so a tenant's access to it is remembered (bounded): a
        thousand watchers of one run cost one access query, not a thousand.
        """
        key = (actor.tenant_id, run_id)
        known = self._access.get(key)
        if known is not None:
            return known
        async with context.service() as ctx:
            run = await runs.require_run(ctx, run_id)
        self._access[key] = run.id
        if len(self._access) > PAYLOADS:
            self._access.popitem(last=False)
        return run.id

    def shaped_now(self, plan: Plan, executor: Executor[Any], item: Item) -> Shaped | None:
        """The shaped ``next`` payload of ``item`` for ``plan``, executed once per event; None
        when executing it would need to await (the caller then uses ``payload``)."""
        last = self._last
        if last is not None and last[0] is item and last[1] == plan.key:
            return last[2]
        key, hit = self._cached(plan, item)
        if hit is not None:
            self._last = (item, plan.key, hit)
            return hit
        result = self._execute(executor, item)
        if isinstance(result, Awaitable):
            with contextlib.suppress(Exception):
                result.close()  # type: ignore[attr-defined]  # a coroutine: never awaited
            return None
        return self._keep(key, item, result)

    async def payload(self, plan: Plan, executor: Executor[Any], item: Item) -> Shaped:
        """The shaped ``next`` payload of ``item`` for ``plan``; executed once per event."""
        key, hit = self._cached(plan, item)
        if hit is not None:
            return hit
        result = self._execute(executor, item)
        if isinstance(result, Awaitable):
            result = await result
        return self._keep(key, item, result)

    def _cached(self, plan: Plan, item: Item) -> tuple[tuple[Any, ...], Shaped | None]:
        if isinstance(item, EventView):
            key: tuple[Any, ...] = (plan.key, item.run_id, item.seq)
        else:
            key = (plan.key, None, id(item))
        hit = self._payloads.get(key)
        if hit is not None and (isinstance(item, EventView) or hit.item is item):
            self._payloads.move_to_end(key)
            return key, hit
        return key, None

    def _execute(self, executor: Executor[Any], item: Item) -> Any:
        self.executions += 1
        return execute_subscription_event(
            executor.build_per_event_executor(RunEvent.from_item(item))
        )

    def _keep(self, key: tuple[Any, ...], item: Item, result: ExecutionResult) -> Shaped:
        shaped = Shaped(None if isinstance(item, EventView) else item, _encode(result))
        self._payloads[key] = shaped
        if len(self._payloads) > PAYLOADS:
            self._payloads.popitem(last=False)
        self._last = None
        return shaped


def _encode(result: ExecutionResult) -> str:
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [error.formatted for error in result.errors]
    return json.dumps(body, separators=(",", ":"))


class Channel:
    """The socket side of one operation: frames with its id spliced in, written directly
    (``wsframes``) when the socket allows, else sent as text through ASGI."""

    def __init__(self, operation: Any, send_text: Any, writer: FrameWriter | None) -> None:
        self.operation = operation
        self._send_text = send_text
        self.writer = writer
        self._prefix = '{"id":' + json.dumps(str(operation.id)) + ',"type":"next","payload":'
        self.prefix = self._prefix.encode()

    async def next(self, shaped: Shaped) -> None:
        if self.writer is not None and self.writer.write(shaped.frame(self.prefix)):
            return
        self.flush()
        await self._send_text(self._prefix + shaped.text + "}")

    def flush(self) -> None:
        """Frames accepted for direct writing go out before anything sent through ASGI."""
        if self.writer is not None:
            self.writer.flush()

    async def fail(self, error: GraphQLError, mid_stream: bool) -> None:
        self.flush()
        if mid_stream:
            await self._send_text(
                self._prefix + json.dumps({"data": None, "errors": [error.formatted]}) + "}"
            )
            await self.complete()
        else:
            await self.operation.send_initial_errors([error])

    async def complete(self) -> None:
        self.flush()
        await self.operation.send_operation_message({"id": self.operation.id, "type": "complete"})


class InlineSink:
    """``services.follow``'s sink for one operation: shape (cached) and write, or decline."""

    __slots__ = ("channel", "deadline", "executor", "loop", "plan", "shared", "writer")

    def __init__(
        self,
        shared: SharedRunEvents,
        plan: Plan,
        executor: Executor[Any],
        channel: Channel,
        writer: FrameWriter,
        deadline: float | None,
    ) -> None:
        self.shared, self.plan, self.executor = shared, plan, executor
        self.channel, self.writer, self.deadline = channel, writer, deadline
        self.loop = asyncio.get_running_loop()

    def __call__(self, item: Item) -> bool:
        if self.channel.operation.completed:
            return False
        if self.deadline is not None and self.loop.time() >= self.deadline:
            return False  # the stream's own timer ends it UNAUTHENTICATED
        shaped = self.shared.shaped_now(self.plan, self.executor, item)
        return shaped is not None and self.writer.write(shaped.frame(self.channel.prefix))


async def serve(
    shared: SharedRunEvents,
    plan: Plan,
    executor: Executor[Any],
    context: GraphQLContext,
    channel: Channel,
) -> None:
    """Run one ``runEvents`` operation on the shared path, from access check to ``complete``."""
    args = shared.arguments(plan, executor)
    try:
        actor = context.actor
        run_id = await shared.run_access(context, actor, str(args.get("runId")))
        after = args.get("afterSeq")
        deadline = _deadline(actor)
        sink = None
        if channel.writer is not None:
            sink = InlineSink(shared, plan, executor, channel, channel.writer, deadline)
        follow = follow_events(context.resources, actor.tenant_id, run_id, after or 0, sink)
        first = await _first(follow)
    except Exception as exc:
        await channel.fail(_located(exc, plan), mid_stream=False)
        return
    async with contextlib.aclosing(follow) as items:
        try:
            # One timer for the whole stream (not one per event): the token's expiry.
            async with asyncio.timeout_at(deadline):
                item = first
                while item is not None and not channel.operation.completed:
                    await channel.next(await shared.payload(plan, executor, item))
                    item = await anext(items, None)
        except TimeoutError:
            expired = UnauthenticatedError("token expired; subscribe again with a new one")
            await channel.fail(_located(expired, plan), mid_stream=True)
            return
        except Exception as exc:
            await channel.fail(_located(exc, plan), mid_stream=True)
            return
    await channel.complete()


async def _first(follow: AsyncGenerator[Item, None]) -> Item | None:
    try:
        return await anext(follow)
    except StopAsyncIteration:
        return None


def _deadline(actor: Actor) -> float | None:
    """The token's expiry on the event loop's clock (None: it never expires)."""
    if actor.expires_at is None:
        return None
    return asyncio.get_running_loop().time() + max(actor.expires_at - time.time(), 0.0)


def _located(exc: Exception, plan: Plan) -> GraphQLError:
    """The error the resolver would have raised, at the field, with its ``extensions.code``."""
    if isinstance(exc, GraphQLError):
        return exc
    message = exc.message if isinstance(exc, TreadleError) else str(exc)
    path = [plan.node.alias.value if plan.node.alias else FIELD]
    return shape_error(GraphQLError(message, [plan.node], path=path, original_error=exc))
