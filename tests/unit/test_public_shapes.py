"""The GraphQL object types say what the views (the REST shapes) say.

The views in ``services/views.py`` are the one source of the public shapes: REST dumps them and
the OpenAPI components are their JSON schemas. The Strawberry types in ``schema/`` are written
by hand (Strawberry reads annotations and resolvers), so this test holds them to the views:
every view field has a GraphQL field of the same name, nullability and kind, and every
GraphQL field a view field, except the differences listed in ``INTENDED``.
"""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import strawberry
from pydantic import BaseModel
from strawberry.scalars import JSON
from strawberry.types.base import StrawberryList, StrawberryOptional, has_object_definition
from strawberry.types.enum import StrawberryEnumDefinition

from treadle.rest import schemas
from treadle.schema.trigger import Trigger
from treadle.schema.types import (
    AuthPayload,
    Health,
    Run,
    RunEvent,
    RunPage,
    Step,
    Tenant,
    User,
    Workflow,
    WorkflowPage,
)
from treadle.services.health import HealthView
from treadle.services.triggers import TriggerView
from treadle.services.views import (
    AuthView,
    EventView,
    RunView,
    StepView,
    TenantView,
    UserView,
    View,
    WorkflowView,
)

PAIRS: list[tuple[type[BaseModel], type]] = [
    (TenantView, Tenant),
    (UserView, User),
    (AuthView, AuthPayload),
    (WorkflowView, Workflow),
    (StepView, Step),
    (RunView, Run),
    (EventView, RunEvent),
    (HealthView, Health),
    (TriggerView, Trigger),
    (schemas.WorkflowPage, WorkflowPage),
    (schemas.RunPage, RunPage),
]
# REST-only shapes: list envelopes (GraphQL returns plain lists) and the error and delta bodies.
REST_ONLY = {"EventList", "TriggerList", "Error", "ErrorDetail", "OutputDelta", "Delta"}
Shape = tuple[str, bool]  # (kind, nullable)
# (GraphQL type, field) -> (view's shape or None if absent, GraphQL's shape or None) and why.
INTENDED: dict[tuple[str, str], tuple[Shape | None, Shape | None]] = {
    # Nested lists are resolvers with arguments, batched by DataLoaders; REST has own routes.
    ("Workflow", "runs"): (None, ("object", False)),
    ("Run", "events"): (None, ("list", False)),
    # A run from a list has no steps in REST; GraphQL loads them on demand.
    ("Run", "steps"): (("list", True), ("list", False)),
    # GraphQL takes any JSON as a run's input; REST documents the object the service stores.
    ("Run", "input"): (("json", False), ("json", True)),
    # runEvents also carries live-only output deltas, which have no id and no seq.
    ("RunEvent", "id"): (("id", False), ("id", True)),
    ("RunEvent", "seq"): (("int", False), ("int", True)),
    # Event, trigger and health kinds stay open strings in GraphQL (new ones are not breaking).
    ("RunEvent", "type"): (("enum", False), ("string", False)),
    ("Trigger", "type"): (("enum", False), ("string", False)),
    ("Health", "status"): (("enum", False), ("string", False)),
    ("Health", "database"): (("enum", False), ("string", False)),
    ("Health", "queue"): (("enum", False), ("string", False)),
}


def _view_kind(schema: dict[str, Any]) -> str:
    if "$ref" in schema or "allOf" in schema:
        return "json" if "Definition" in str(schema) else "object"
    kind = schema.get("type")
    if kind == "string":
        if "enum" in schema:
            return "enum"
        return {"uuid": "id", "date-time": "datetime"}.get(schema.get("format", ""), "string")
    if kind == "array":
        return "list"
    if kind == "object" or kind is None:
        return "json"
    return {"integer": "int", "boolean": "bool", "number": "float"}[kind]


def view_shapes(view: type[BaseModel]) -> dict[str, Shape]:
    """Each field the view shows, by its Python name: its kind and whether it may be null."""
    schema = view.model_json_schema(mode="serialization")
    aliases = {f.alias or n: n for n, f in view.model_fields.items() if not f.exclude}
    aliases |= {f.alias or n: n for n, f in view.model_computed_fields.items()}
    shapes: dict[str, Shape] = {}
    for alias, prop in schema["properties"].items():
        options = prop.get("anyOf", [prop])
        concrete = [each for each in options if each.get("type") != "null"]
        any_json = "type" not in concrete[0] and _view_kind(concrete[0]) == "json"
        nullable = len(concrete) < len(options) or any_json  # any JSON value includes null
        shapes[aliases[alias]] = (_view_kind(concrete[0]), nullable)
    return shapes


def _graphql_kind(kind: Any) -> str:
    if isinstance(kind, StrawberryList):
        return "list"
    if isinstance(kind, StrawberryEnumDefinition):
        return "enum"
    if kind is strawberry.ID:
        return "id"
    if kind is JSON:
        return "json"
    if has_object_definition(kind):
        return "object"
    known = {str: "string", int: "int", bool: "bool", float: "float"}
    return known.get(kind) or ("datetime" if kind is datetime.datetime else repr(kind))


def graphql_shapes(graphql_type: type) -> dict[str, Shape]:
    shapes: dict[str, Shape] = {}
    for field in graphql_type.__strawberry_definition__.fields:  # type: ignore[attr-defined]
        kind, nullable = field.type, isinstance(field.type, StrawberryOptional)
        if nullable:
            kind = kind.of_type
        shapes[field.python_name] = (_graphql_kind(kind), nullable)
    return shapes


@pytest.mark.parametrize(("view", "graphql_type"), PAIRS, ids=[g.__name__ for _, g in PAIRS])
def test_graphql_type_matches_its_view(view: type[BaseModel], graphql_type: type) -> None:
    rest, graphql = view_shapes(view), graphql_shapes(graphql_type)
    name = graphql_type.__name__
    for field in sorted(set(rest) | set(graphql)):
        found = (rest.get(field), graphql.get(field))
        expected = INTENDED.get((name, field), (rest.get(field), rest.get(field)))
        assert found == expected, f"{name}.{field}: view and GraphQL differ: {found}"


def test_every_intended_difference_is_still_one() -> None:
    """A listed difference that went away must leave the list (so the list stays true)."""
    pairs = {graphql_type.__name__: (view, graphql_type) for view, graphql_type in PAIRS}
    for (name, field), expected in INTENDED.items():
        view, graphql_type = pairs[name]
        found = (view_shapes(view).get(field), graphql_shapes(graphql_type).get(field))
        assert found == expected
        assert found[0] != found[1]


def test_every_view_is_checked() -> None:
    """A new view is either paired with its GraphQL type above or listed as REST-only."""

    def subclasses(cls: type) -> set[type]:
        found: set[type] = set()
        each: type
        for each in cls.__subclasses__():
            found |= {each, *subclasses(each)}
        return found

    ours = {cls for cls in subclasses(View) if cls.__module__.startswith("treadle.")}
    paired = {view for view, _ in PAIRS}
    assert {cls.__name__ for cls in ours - paired} == REST_ONLY


def test_the_check_sees_a_missing_graphql_field() -> None:
    """The check is not vacuous: a view field the GraphQL type lacks is reported."""

    class Narrow(BaseModel):
        id: int

    @strawberry.type
    class NarrowType:
        id: int
        extra: str

    assert view_shapes(Narrow) == {"id": ("int", False)}
    assert graphql_shapes(NarrowType) == {"id": ("int", False), "extra": ("string", False)}
    with pytest.raises(AssertionError, match=r"NarrowType\.extra"):
        test_graphql_type_matches_its_view(Narrow, NarrowType)
