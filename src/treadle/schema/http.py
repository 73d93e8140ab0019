"""GraphQL over HTTP and websockets: strict JSON in, and transport errors as GraphQL errors.

Strawberry parses bodies with plain ``json.loads`` (NaN, ``1e400``, NUL, lone surrogates and
10,000-deep nesting all got through, or overflowed the stack), assumes the body is an object
(``123`` and ``null`` were 500s) and answers its own transport errors in plain text. These
helpers are what ``TreadleGraphQL`` uses instead, so every answer is ``{"errors": [...]}`` with
``extensions.code``.
"""

from __future__ import annotations

import json
from typing import Any

from cross_web import HTTPException
from graphql import GraphQLError, OperationType, get_operation_ast, parse
from starlette.responses import JSONResponse, Response

from treadle import jsoncheck
from treadle.errors import ValidationError
from treadle.schema.limits import MAX_TOKENS

_CODES = {404: "NOT_FOUND", 413: "PAYLOAD_TOO_LARGE"}


class BadRequestError(HTTPException):
    """A 400 that names the offending fields, like a VALIDATION_ERROR does."""

    def __init__(self, error: ValidationError) -> None:
        super().__init__(400, error.message)
        self.fields = error.fields


def parse_request_json(data: str | bytes) -> dict[str, Any] | list[Any]:
    """A GraphQL request body (or ``variables`` of a GET): a JSON object, parsed strictly.

    A list is let through: Strawberry answers it (batching is off) with its own 400.
    """
    try:
        parsed = jsoncheck.loads(data)
    except ValidationError as exc:
        raise BadRequestError(exc) from exc  # fields like variables.input.email
    if not isinstance(parsed, dict | list):
        raise BadRequestError(ValidationError("the request must be a JSON object"))
    return parsed


def decode_frame(data: str | bytes) -> object:
    """A websocket message; a frame that is not sane JSON closes the socket (4400).

    Text is not checked here: one bad string must fail one operation, not the connection
    (services refuse it with VALIDATION_ERROR).
    """
    try:
        return jsoncheck.loads(data, check_text=False)
    except ValidationError as exc:
        raise json.JSONDecodeError(exc.message, "", 0) from exc


def refuse_subscription(query: str | None, operation_name: str | None) -> None:
    """A subscription sent over HTTP is a 400: they are served over websockets only.

    (Strawberry would run it as a query and fail with a 500.) Documents that do not mention
    ``subscription`` are not parsed here; unparsable ones are left to the normal path.
    """
    if not query or "subscription" not in query:
        return
    try:
        operation = get_operation_ast(parse(query, max_tokens=MAX_TOKENS), operation_name)
    except GraphQLError:
        return
    if operation is not None and operation.operation == OperationType.SUBSCRIPTION:
        raise HTTPException(400, "subscriptions are served over websockets (graphql-transport-ws)")


def error_response(exc: HTTPException) -> Response:
    """A transport-level failure as a GraphQL error with a code, at the same HTTP status."""
    code = _CODES.get(exc.status_code, "VALIDATION_ERROR")
    extensions: dict[str, object] = {"code": code}
    fields = getattr(exc, "fields", None)
    if fields:
        extensions["fields"] = fields
    body = {"errors": [{"message": exc.reason, "extensions": extensions}]}
    return JSONResponse(body, status_code=exc.status_code)
