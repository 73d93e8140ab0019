"""Errors that cross a boundary.

Each class fixes its public ``code`` and ``http_status``, so code that raises never picks a number.
REST renders them as ``{"error": {"code", "message"}}``; GraphQL puts ``code`` in ``extensions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class TreadleError(Exception):
    """Base of every error whose code and message may be shown to a client."""

    code: ClassVar[str] = "INTERNAL"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, str] = dict(fields or {})


class UnauthenticatedError(TreadleError):
    code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDeniedError(TreadleError):
    code = "FORBIDDEN"
    http_status = 403


class NotFoundError(TreadleError):
    code = "NOT_FOUND"
    http_status = 404


class ConflictError(TreadleError):
    code = "CONFLICT"
    http_status = 409


class IllegalTransitionError(ConflictError):
    """A state change that the step or run state machine does not allow."""


class ValidationError(TreadleError):
    code = "VALIDATION_ERROR"
    http_status = 400


class InvalidDagError(ValidationError):
    """A workflow definition that breaks a rule of the DAG format."""


class PayloadTooLargeError(TreadleError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class RateLimitedError(TreadleError):
    code = "RATE_LIMITED"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(TreadleError):
    code = "UNAVAILABLE"
    http_status = 503
