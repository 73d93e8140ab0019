"""Input types. Resolvers pass them to services as plain dicts, which services validate."""

import dataclasses
from typing import Any

import strawberry
from strawberry.scalars import JSON

from treadle.schema.types import Role  # noqa: F401 - registers the enum before use
from treadle.security import Role as RoleEnum


@strawberry.input
class RegisterInput:
    tenant_name: str
    email: str
    password: str
    name: str


@strawberry.input
class LoginInput:
    email: str
    password: str


@strawberry.input
class CreateUserInput:
    email: str
    password: str
    name: str
    role: RoleEnum = RoleEnum.MEMBER


@strawberry.input
class WorkflowInput:
    name: str
    description: str = ""
    definition: JSON


@strawberry.input
class WorkflowUpdateInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    definition: JSON | None = strawberry.UNSET


def as_payload(value: object) -> dict[str, Any]:
    """An input object as the REST-shaped dict the services validate (unset fields dropped)."""
    payload: dict[str, Any] = {}
    for field_ in dataclasses.fields(value):  # type: ignore[arg-type]
        item = getattr(value, field_.name)
        if item is strawberry.UNSET:
            continue
        if isinstance(item, RoleEnum):
            item = item.value
        payload[_camel(field_.name)] = item
    return payload


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)
