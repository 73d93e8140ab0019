"""Frozen views returned by services: the one source of the public shapes.

Each view is a frozen pydantic model whose camelCase aliases are the JSON field names. REST
dumps it (``to_json``), ``rest/openapi.py`` takes its component schemas from it
(``model_json_schema``), and ``tests/unit/test_public_shapes.py`` checks the hand-written
Strawberry types in ``schema/types.py`` against it. Adding a field to a view is therefore one
edit here plus the GraphQL field beside it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Generic, Protocol, TypeVar

import pydantic
from pydantic import ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

from treadle.engine.json import JSON, JSONObject
from treadle.engine.states import EventType, RunStatus, StepStatus
from treadle.errors import ValidationError
from treadle.jsoncheck import check_input
from treadle.models import Tenant, User, Workflow, WorkflowRun
from treadle.redact import redact
from treadle.security import Role

M = TypeVar("M", bound=pydantic.BaseModel)
T = TypeVar("T")


def parse_input(model: type[M], data: object) -> M:
    """Validate client input; pydantic's errors become one VALIDATION_ERROR naming each field.

    Text the database cannot hold (NUL, lone surrogates, non-finite numbers, absurd nesting)
    is refused first, whichever adapter the input came through.
    """
    check_input(data)
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        fields = {
            ".".join(str(part) for part in err["loc"]) or "body": err["msg"] for err in exc.errors()
        }
        detail = "; ".join(f"{name}: {msg}" for name, msg in fields.items())
        raise ValidationError(f"invalid input: {detail}", fields=fields) from exc


def redact_definition(definition: JSONObject) -> JSONObject:
    """Definitions are shown with their secrets (webhook secrets, auth headers) redacted."""
    shown = redact(definition)
    return shown if isinstance(shown, dict) else {}


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


# An instant on the wire: ISO 8601, UTC spelled "Z" (one spelling over REST, GraphQL and SSE).
Instant = Annotated[
    datetime,
    PlainSerializer(_iso, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
if TYPE_CHECKING:
    AnyJSON = JSON
    JSONInput = JSON
    Definition = JSONObject
else:  # pydantic cannot build a validator from the recursive aliases (see engine.json)
    AnyJSON = Annotated[Any, WithJsonSchema({"description": "Any JSON value."})]
    JSONInput = Annotated[Any, WithJsonSchema({"type": "object"})]
    # OpenAPI refers it to its Definition schema (made per step registry).
    Definition = Annotated[dict[str, Any], WithJsonSchema({"type": "object"})]


def one_of(enum: type[StrEnum]) -> WithJsonSchema:
    """A plain ``str`` field documented as one of ``enum``'s values."""
    return WithJsonSchema({"type": "string", "enum": [member.value for member in enum]})


class View(pydantic.BaseModel):
    """A frozen public shape; ``to_json`` is its wire form (camelCase, instants with "Z")."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        json_schema_serialization_defaults_required=True,
    )

    def to_json(self) -> JSONObject:
        return self.model_dump(mode="json", by_alias=True)


class TenantView(View):
    id: uuid.UUID
    name: str

    @classmethod
    def of(cls, row: Tenant) -> TenantView:
        return cls(id=row.id, name=row.name)


class UserView(View):
    id: uuid.UUID
    email: str
    name: str
    role: Annotated[str, one_of(Role)]
    tenant_id: uuid.UUID

    @classmethod
    def of(cls, row: User) -> UserView:
        return cls(
            id=row.id, email=row.email, name=row.name, role=row.role, tenant_id=row.tenant_id
        )


class AuthView(View):
    token: str
    user: UserView
    tenant: TenantView


class WorkflowView(View):
    id: uuid.UUID
    name: str
    description: str
    version: int = Field(ge=1)
    definition: Definition
    created_at: Instant
    updated_at: Instant

    @classmethod
    def of(cls, row: Workflow) -> WorkflowView:
        return cls(
            id=row.id,
            name=row.name,
            description=row.description,
            version=row.version,
            definition=redact_definition(row.definition),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class StepFields(Protocol):
    """What a step view is made of: a ``WorkflowStep`` or the hot path's plain row."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def node_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def output(self) -> JSON: ...
    @property
    def error(self) -> JSON: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...


class EventFields(Protocol):
    """What an event view is made of: a ``WorkflowEvent`` or the hot path's plain row."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def run_id(self) -> uuid.UUID: ...
    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def data(self) -> JSON: ...
    @property
    def created_at(self) -> datetime: ...


class StepView(View):
    id: uuid.UUID
    node_id: str
    type: str
    status: Annotated[str, one_of(StepStatus)]
    attempt: int = Field(ge=0)
    output: AnyJSON
    error: AnyJSON
    started_at: Instant | None
    finished_at: Instant | None

    @classmethod
    def of(cls, row: StepFields) -> StepView:
        return cls(
            id=row.id,
            node_id=row.node_id,
            type=row.type,
            status=row.status,
            attempt=row.attempt,
            output=row.output,
            error=row.error,
            started_at=row.started_at,
            finished_at=row.finished_at,
        )


class RunView(View):
    """A run of a workflow; in a list of runs it has no ``steps``."""

    id: uuid.UUID
    tenant_id: uuid.UUID = Field(exclude=True)  # for the adapters' checks, not shown
    workflow_id: uuid.UUID
    workflow_version: int = Field(ge=1)
    status: Annotated[str, one_of(RunStatus)]
    input: JSONInput
    output: AnyJSON
    error: AnyJSON
    created_at: Instant
    started_at: Instant | None
    finished_at: Instant | None
    steps: tuple[StepView, ...] | None = Field(None, exclude_if=lambda steps: steps is None)

    @classmethod
    def of(cls, row: WorkflowRun, steps: tuple[StepView, ...] | None = None) -> RunView:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            workflow_id=row.workflow_id,
            workflow_version=row.workflow_version,
            status=row.status,
            input=row.input,
            output=row.output,
            error=row.error,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            steps=steps,
        )


class EventView(View):
    id: uuid.UUID
    run_id: uuid.UUID
    seq: int = Field(ge=1)
    type: Annotated[str, one_of(EventType)]
    node_id: str | None
    data: AnyJSON
    created_at: Instant

    @classmethod
    def of(cls, row: EventFields) -> EventView:
        return cls(
            id=row.id,
            run_id=row.run_id,
            seq=row.seq,
            type=row.type,
            node_id=row.node_id,
            data=row.data,
            created_at=row.created_at,
        )

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> EventView:
        return cls.model_validate(body)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    page: int
    page_size: int
    total: int
