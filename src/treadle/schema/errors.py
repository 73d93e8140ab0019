"""Error shaping: every GraphQL error carries ``extensions.code``; unexpected ones are masked."""

import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from typing import Any

from graphql.error import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from treadle.errors import RateLimitedError, TreadleError
from treadle.logging import request_id_var

logger = logging.getLogger(__name__)


_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def shape_error(error: GraphQLError, *, hide_suggestions: bool = False) -> GraphQLError:
    original = error.original_error
    if isinstance(original, TreadleError):
        extensions = {**(error.extensions or {}), "code": original.code}
        if original.fields:
            extensions["fields"] = original.fields
        if isinstance(original, RateLimitedError):
            extensions["retryAfter"] = original.retry_after
        error.extensions = extensions
        return error
    if error.extensions and "code" in error.extensions:
        return error  # shaped already (websocket results pass through here twice)
    if original is None or isinstance(original, GraphQLError):
        # Parsing and validation errors of the document itself, and graphql-core's coercion of
        # variables (wrong type, unknown enum value, missing required variable), which keeps its
        # own GraphQLError as ``original_error``. In production they do not suggest names
        # (that would leak the schema that introspection hides).
        if hide_suggestions:
            error.message = _SUGGESTION.sub("", error.message)
        error.extensions = {**(error.extensions or {}), "code": "VALIDATION_ERROR"}
        return error
    request_id = request_id_var.get()
    logger.error("unexpected error in resolver", exc_info=original)
    return GraphQLError(
        "internal error",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": "INTERNAL", "requestId": request_id},
    )


class DomainErrors(SchemaExtension):
    def __init__(self, *, hide_suggestions: bool = False) -> None:
        self.hide_suggestions = hide_suggestions

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        errors = getattr(result, "errors", None)
        if result is not None and errors:
            hide = self.hide_suggestions
            result.errors = [shape_error(error, hide_suggestions=hide) for error in errors]


# Errors Strawberry's websocket handler makes itself, with no exception behind them.
_TRANSPORT_CODES = {"Subscription limit reached": "RATE_LIMITED"}


async def shaped_results(
    results: AsyncIterator[Any], *, hide_suggestions: bool = False
) -> AsyncGenerator[Any, None]:
    """A websocket operation's results with shaped errors: DomainErrors does not see them."""
    async for result in results:
        if isinstance(result, ExecutionResult) and result.errors:
            result.errors = [
                shape_error(e, hide_suggestions=hide_suggestions) for e in result.errors
            ]
        yield result


def with_codes(message: Mapping[str, Any]) -> dict[str, Any]:
    """A graphql-transport-ws message whose every error has ``extensions.code``."""
    shaped = dict(message)
    payload = shaped.get("payload")
    if shaped.get("type") == "error" and isinstance(payload, list):
        shaped["payload"] = [_coded(error) for error in payload]
    elif shaped.get("type") == "next" and isinstance(payload, dict) and payload.get("errors"):
        shaped["payload"] = {**payload, "errors": [_coded(e) for e in payload["errors"]]}
    return shaped


def _coded(error: Any) -> Any:
    if not isinstance(error, dict) or "code" in (error.get("extensions") or {}):
        return error
    code = _TRANSPORT_CODES.get(str(error.get("message")), "VALIDATION_ERROR")
    return {**error, "extensions": {**(error.get("extensions") or {}), "code": code}}
