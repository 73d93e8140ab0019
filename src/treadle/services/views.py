"""Frozen views returned by services, and the JSON shapes of the public contract."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import pydantic

from treadle.engine.json import JSON, JSONObject
from treadle.errors import ValidationError
from treadle.jsoncheck import check_input
from treadle.models import Tenant, User, Workflow, WorkflowEvent, WorkflowRun, WorkflowStep
from treadle.redact import redact

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


@dataclass(frozen=True, slots=True)
class TenantView:
    id: uuid.UUID
    name: str

    @classmethod
    def of(cls, row: Tenant) -> TenantView:
        return cls(id=row.id, name=row.name)

    def to_json(self) -> JSONObject:
        return {"id": str(self.id), "name": self.name}


@dataclass(frozen=True, slots=True)
class UserView:
    id: uuid.UUID
    email: str
    name: str
    role: str
    tenant_id: uuid.UUID

    @classmethod
    def of(cls, row: User) -> UserView:
        return cls(
            id=row.id, email=row.email, name=row.name, role=row.role, tenant_id=row.tenant_id
        )

    def to_json(self) -> JSONObject:
        return {
            "id": str(self.id),
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "tenantId": str(self.tenant_id),
        }


@dataclass(frozen=True, slots=True)
class AuthView:
    token: str
    user: UserView
    tenant: TenantView

    def to_json(self) -> JSONObject:
        return {"token": self.token, "user": self.user.to_json(), "tenant": self.tenant.to_json()}


@dataclass(frozen=True, slots=True)
class WorkflowView:
    id: uuid.UUID
    name: str
    description: str
    version: int
    definition: JSONObject
    created_at: datetime
    updated_at: datetime

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

    def to_json(self) -> JSONObject:
        return {
            "id": str(self.id),
            "name": self.name,
            "description": self.description,
            "version": self.version,
            "definition": self.definition,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
        }


@dataclass(frozen=True, slots=True)
class StepView:
    id: uuid.UUID
    node_id: str
    type: str
    status: str
    attempt: int
    output: JSON
    error: JSON
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, row: WorkflowStep) -> StepView:
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

    def to_json(self) -> JSONObject:
        return {
            "id": str(self.id),
            "nodeId": self.node_id,
            "type": self.type,
            "status": self.status,
            "attempt": self.attempt,
            "output": self.output,
            "error": self.error,
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at),
        }


@dataclass(frozen=True, slots=True)
class RunView:
    id: uuid.UUID
    tenant_id: uuid.UUID
    workflow_id: uuid.UUID
    workflow_version: int
    status: str
    input: JSON
    output: JSON
    error: JSON
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    steps: tuple[StepView, ...] | None = None

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

    def to_json(self) -> JSONObject:
        body: JSONObject = {
            "id": str(self.id),
            "workflowId": str(self.workflow_id),
            "workflowVersion": self.workflow_version,
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "error": self.error,
            "createdAt": iso(self.created_at),
            "startedAt": iso(self.started_at),
            "finishedAt": iso(self.finished_at),
        }
        if self.steps is not None:
            body["steps"] = [step.to_json() for step in self.steps]
        return body


@dataclass(frozen=True, slots=True)
class EventView:
    id: uuid.UUID
    run_id: uuid.UUID
    seq: int
    type: str
    node_id: str | None
    data: JSON
    created_at: datetime

    @classmethod
    def of(cls, row: WorkflowEvent) -> EventView:
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
        return cls(
            id=uuid.UUID(body["id"]),
            run_id=uuid.UUID(body["runId"]),
            seq=int(body["seq"]),
            type=body["type"],
            node_id=body.get("nodeId"),
            data=body.get("data"),
            created_at=datetime.fromisoformat(body["createdAt"]),
        )

    def to_json(self) -> JSONObject:
        return {
            "id": str(self.id),
            "runId": str(self.run_id),
            "seq": self.seq,
            "type": self.type,
            "nodeId": self.node_id,
            "data": self.data,
            "createdAt": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    page: int
    page_size: int
    total: int
