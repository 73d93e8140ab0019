"""Error shaping: every GraphQL error carries ``extensions.code``; unexpected ones are masked."""

import logging
import re
from collections.abc import Iterator

from graphql.error import GraphQLError
from strawberry.extensions import SchemaExtension

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
    if original is None:
        # Parsing and validation errors of the document itself; in production they do not
        # suggest field names (that would leak the schema that introspection hides).
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
