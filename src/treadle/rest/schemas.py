"""The REST aliases' own shapes: request bodies and list envelopes, as pydantic models.

The views (``services.views``) are the objects; these are what only REST adds around them.
``rest/openapi.py`` takes every component schema from these models and the views.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, WithJsonSchema

from treadle.services.approval import ApprovalInput
from treadle.services.auth import CreateUserInput, LoginInput, RegisterInput
from treadle.services.triggers import TriggerView
from treadle.services.views import EventView, RunView, View, WorkflowView
from treadle.services.workflows import MAX_PAGE_SIZE, WorkflowInput, WorkflowUpdateInput

__all__ = [
    "ApprovalInput",
    "CreateUserInput",
    "Error",
    "EventList",
    "ExecuteInput",
    "LoginInput",
    "OutputDelta",
    "RegisterInput",
    "RerunInput",
    "RunPage",
    "TriggerList",
    "WorkflowInput",
    "WorkflowPage",
    "WorkflowUpdateInput",
]

DELTA_EVENT = "STEP_OUTPUT_DELTA"
# Every code an error body can carry (API.md); METHOD_NOT_ALLOWED is a 405 with Allow.
ERROR_CODES = [
    "VALIDATION_ERROR",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "PAYLOAD_TOO_LARGE",
    "RATE_LIMITED",
    "METHOD_NOT_ALLOWED",
    "INTERNAL",
    "UNAVAILABLE",
]
_OBJECT_OR_NULL = WithJsonSchema({"type": ["object", "null"]})


class ExecuteInput(BaseModel):
    input: Annotated[dict[str, JsonValue] | None, _OBJECT_OR_NULL] = Field(
        None, description="The run's input (absent or null: {})."
    )


class RerunInput(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_node_id: str | None = Field(
        None,
        alias="fromNodeId",
        description="Re-run from this node (default: the first failed one).",
    )
    input: Annotated[dict[str, JsonValue] | None, _OBJECT_OR_NULL] = Field(
        None, description="A new input for the run (absent or null: unchanged)."
    )


class WorkflowPage(View):
    items: tuple[WorkflowView, ...]
    page: int = Field(ge=1)
    page_size: int = Field(ge=1, le=MAX_PAGE_SIZE)
    total: int = Field(ge=0)


class RunPage(View):
    """A page of runs, each without its steps."""

    items: tuple[RunView, ...]
    page: int = Field(ge=1)
    page_size: int = Field(ge=1, le=MAX_PAGE_SIZE)
    total: int = Field(ge=0)


class EventList(View):
    items: tuple[EventView, ...]


class TriggerList(View):
    items: tuple[TriggerView, ...]


class ErrorDetail(View):
    code: Annotated[str, WithJsonSchema({"type": "string", "enum": ERROR_CODES})]
    message: str


class Error(View):
    error: ErrorDetail


class Delta(View):
    delta: str


class OutputDelta(View):
    """A live-only piece of a step's streamed output (never stored, so no id or seq)."""

    type: Literal["STEP_OUTPUT_DELTA"]
    run_id: uuid.UUID
    node_id: str
    data: Delta
