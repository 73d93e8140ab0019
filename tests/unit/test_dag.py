"""parse_definition: the contract's example is valid; every broken rule is reported by name."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, JsonValue
from pydantic.alias_generators import to_camel

from treadle.engine.dag import MAX_EDGES, MAX_NODES, Dag, RetryPolicy, parse_definition
from treadle.engine.json import JSON
from treadle.engine.steps import (
    Sleep,
    StepContext,
    StepRegistry,
    StepType,
    condition,
    delay,
    transform,
)
from treadle.errors import InvalidDagError

_STUB_CONFIG = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


class _HttpConfig(BaseModel):
    model_config = _STUB_CONFIG
    method: str = "GET"
    url: str
    body: JsonValue = None


class _AiConfig(BaseModel):
    model_config = _STUB_CONFIG
    prompt: str
    max_tokens: int | None = None


class _WebhookConfig(BaseModel):
    model_config = _STUB_CONFIG
    url: str
    secret: str | None = None


def _stub(step_name: str, model: type[BaseModel]) -> StepType:
    """A stand-in for a step type owned by another module; only its config model matters."""

    class Stub:
        name: ClassVar[str] = step_name
        config_model: ClassVar[type[BaseModel]] = model

        async def run(self, config: BaseModel, ctx: StepContext) -> JSON | Sleep:
            return None

    return Stub()


REGISTRY: StepRegistry = {
    "HTTP_REQUEST": _stub("HTTP_REQUEST", _HttpConfig),
    "AI_COMPLETION": _stub("AI_COMPLETION", _AiConfig),
    "WEBHOOK": _stub("WEBHOOK", _WebhookConfig),
    "CONDITION": condition.STEP,
    "TRANSFORM": transform.STEP,
    "DELAY": delay.STEP,
}

EXAMPLE: dict[str, Any] = {
    "nodes": [
        {
            "id": "fetch",
            "type": "HTTP_REQUEST",
            "config": {"method": "GET", "url": "https://api.example.com/items/{{ input.itemId }}"},
        },
        {
            "id": "summarize",
            "type": "AI_COMPLETION",
            "config": {"prompt": "Summarize: {{ steps.fetch.output.body.text }}", "maxTokens": 200},
            "retry": {"maxAttempts": 4, "backoffSeconds": 1},
            "timeoutSeconds": 60,
        },
        {
            "id": "long",
            "type": "CONDITION",
            "config": {"expression": "steps.summarize.output.text | length > 100"},
        },
        {
            "id": "shape",
            "type": "TRANSFORM",
            "config": {
                "output": {
                    "title": "{{ steps.fetch.output.body.title }}",
                    "n": "{{ input.n * 2 }}",
                }
            },
        },
        {"id": "wait", "type": "DELAY", "config": {"seconds": 5}},
        {
            "id": "notify",
            "type": "WEBHOOK",
            "config": {"url": "https://hooks.example.com/x", "secret": "s3cret"},
        },
    ],
    "edges": [
        {"from": "fetch", "to": "summarize"},
        {"from": "summarize", "to": "long"},
        {"from": "long", "to": "shape", "when": True},
        {"from": "long", "to": "wait", "when": False},
        {"from": "shape", "to": "notify"},
        {"from": "wait", "to": "notify"},
    ],
}


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def test_the_contract_example_is_valid() -> None:
    dag = parse_definition(example(), REGISTRY)
    assert list(dag.nodes) == ["fetch", "summarize", "long", "shape", "wait", "notify"]
    assert dag.roots == ("fetch",)
    position = {node_id: index for index, node_id in enumerate(dag.order)}
    assert sorted(position) == sorted(dag.nodes)
    assert all(position[edge.source] < position[edge.target] for edge in dag.edges)
    assert [edge.source for edge in dag.parents["notify"]] == ["shape", "wait"]
    assert [(edge.target, edge.when) for edge in dag.children["long"]] == [
        ("shape", True),
        ("wait", False),
    ]
    assert dag.nodes["summarize"].timeout_seconds == 60
    assert dag.nodes["fetch"].retry == RetryPolicy()
    assert isinstance(dag.configs["long"], condition.Config)
    assert isinstance(dag.configs["wait"], delay.Config)


def test_to_json_is_canonical_and_round_trips() -> None:
    dag = parse_definition(example(), REGISTRY)
    stored = dag.to_json()
    nodes = stored["nodes"]
    assert isinstance(nodes, list)
    assert nodes[0] == {
        "id": "fetch",
        "type": "HTTP_REQUEST",
        "config": EXAMPLE["nodes"][0]["config"],
        "retry": {"maxAttempts": 4, "backoffSeconds": 1.0, "maxBackoffSeconds": 300.0},
        "timeoutSeconds": 300.0,
    }
    assert stored["edges"] == EXAMPLE["edges"]
    assert parse_definition(stored, REGISTRY).to_json() == stored


def test_edges_may_be_omitted() -> None:
    dag = parse_definition(
        {"nodes": [{"id": "only", "type": "DELAY", "config": {"seconds": 1}}]}, REGISTRY
    )
    assert dag.order == ("only",)
    assert dag.edges == ()


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    """A mutator that sets ``value`` at a dotted path such as ``nodes.0.config.url``."""

    def mutate(definition: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target: Any = definition
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


def _add_edge(edge: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda definition: definition["edges"].append(edge)


def _add_node(node: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    return lambda definition: definition["nodes"].append(node)


_DELETE = object()
_TRANSFORM = {"type": "TRANSFORM", "config": {"output": 1}}

INVALID = [
    ("bad id", _set("nodes.0.id", "1fetch"), "id '1fetch' is invalid", "definition.nodes[0].id"),
    ("hyphen id", _set("nodes.0.id", "fe-tch"), "is invalid", "definition.nodes[0].id"),
    ("long id", _set("nodes.0.id", "a" * 65), "is invalid", "definition.nodes[0].id"),
    ("no id", _set("nodes.0.id", _DELETE), "nodes[0]: id is required", "definition.nodes[0].id"),
    (
        "duplicate id",
        _set("nodes.1.id", "fetch"),
        "nodes[1]: id 'fetch' is already used by nodes[0]",
        "definition.nodes[1].id",
    ),
    (
        "unknown type",
        _set("nodes.0.type", "HTTP"),
        "node 'fetch': unknown type 'HTTP'; known types: AI_COMPLETION, CONDITION, DELAY, "
        "HTTP_REQUEST, TRANSFORM, WEBHOOK",
        "definition.nodes[0].type",
    ),
    (
        "missing config field",
        _set("nodes.0.config.url", _DELETE),
        "node 'fetch': config.url: field required",
        "definition.nodes[0].config.url",
    ),
    (
        "extra config field",
        _set("nodes.0.config.colour", "red"),
        "node 'fetch': config.colour: unknown field",
        "definition.nodes[0].config.colour",
    ),
    (
        "extra node field",
        _set("nodes.0.colour", "red"),
        "node 'fetch': colour: unknown field",
        "definition.nodes[0].colour",
    ),
    (
        "retry out of range",
        _set("nodes.1.retry.maxAttempts", 0),
        "node 'summarize': retry.maxAttempts",
        "definition.nodes[1].retry.maxAttempts",
    ),
    (
        "timeout zero",
        _set("nodes.1.timeoutSeconds", 0),
        "timeoutSeconds",
        "definition.nodes[1].timeoutSeconds",
    ),
    (
        "edge to unknown node",
        _add_edge({"from": "fetch", "to": "ghost"}),
        "edge fetch -> ghost: there is no node 'ghost'",
        "definition.edges[6].to",
    ),
    (
        "self-loop",
        _add_edge({"from": "shape", "to": "shape"}),
        "connected to itself",
        "definition.edges[6]",
    ),
    (
        "duplicate edge",
        _add_edge({"from": "fetch", "to": "summarize"}),
        "edge fetch -> summarize: duplicate of edges[0]",
        "definition.edges[6]",
    ),
    (
        "condition edge without when",
        _set("edges.2.when", _DELETE),
        "edge long -> shape: edges leaving CONDITION node 'long' need \"when\"",
        "definition.edges[2].when",
    ),
    (
        "normal edge with when",
        _set("edges.0.when", True),
        'edge fetch -> summarize: "when" is only for edges leaving a CONDITION node; '
        "'fetch' is a HTTP_REQUEST",
        "definition.edges[0].when",
    ),
    (
        "when not a bool",
        _set("edges.2.when", "yes"),
        "edge long -> shape: when: input should be a valid boolean",
        "definition.edges[2].when",
    ),
    (
        "edge without to",
        _set("edges.0.to", _DELETE),
        "edges[0]: to: field required",
        "definition.edges[0].to",
    ),
    (
        "edge not an object",
        _set("edges.0", "fetch->x"),
        "edges[0] must be an object",
        "definition.edges[0]",
    ),
    (
        "node not an object",
        _set("nodes.0", "fetch"),
        "nodes[0] must be an object",
        "definition.nodes[0]",
    ),
    (
        "bad template syntax",
        _set("nodes.3.config.output.title", "{{ steps.fetch.output.body.title }"),
        "node 'shape': config.output.title: template '{{ steps.fetch.output.body.title }': syntax",
        "definition.nodes[3].config.output.title",
    ),
    (
        "bad template in a key",
        _set("nodes.3.config.output", {"{% if %}": 1}),
        "node 'shape': config.output.{% if %}: template",
        "definition.nodes[3].config.output.{% if %}",
    ),
    (
        "bad condition expression",
        _set("nodes.2.config.expression", "steps.summarize.output.text | length >"),
        "node 'long': config.expression: expression",
        "definition.nodes[2].config.expression",
    ),
    (
        "empty condition expression",
        _set("nodes.2.config.expression", " "),
        "node 'long': config.expression",
        "definition.nodes[2].config.expression",
    ),
    (
        "delay with both",
        _set("nodes.4.config.until", "2030-01-01T00:00:00Z"),
        "node 'wait': config: set exactly one",
        "definition.nodes[4].config",
    ),
    (
        "delay too long",
        _set("nodes.4.config.seconds", 2_592_001),
        "node 'wait': config.seconds",
        "definition.nodes[4].config.seconds",
    ),
    ("unknown top-level field", _set("name", "x"), "unknown field 'name'", "definition.name"),
    ("no nodes", _set("nodes", _DELETE), '"nodes" must be a non-empty list', "definition.nodes"),
    ("empty nodes", _set("nodes", []), '"nodes" must be a non-empty list', "definition.nodes"),
    ("edges not a list", _set("edges", {}), '"edges" must be a list', "definition.edges"),
]


@pytest.mark.parametrize(
    ("mutate", "message", "field"),
    [pytest.param(mutate, message, field, id=name) for name, mutate, message, field in INVALID],
)
def test_invalid_definitions_are_reported(
    mutate: Callable[[dict[str, Any]], None], message: str, field: str
) -> None:
    definition = example()
    mutate(definition)
    with pytest.raises(InvalidDagError) as caught:
        parse_definition(definition, REGISTRY)
    assert message in caught.value.message
    assert field in caught.value.fields
    assert caught.value.code == "VALIDATION_ERROR"


@pytest.mark.parametrize("raw", [None, [], "nodes", 3, [{"id": "a"}]])
def test_a_definition_must_be_an_object(raw: object) -> None:
    with pytest.raises(InvalidDagError, match="must be a JSON object") as caught:
        parse_definition(raw, REGISTRY)
    assert "definition" in caught.value.fields


def test_a_cycle_names_its_nodes() -> None:
    definition = {
        "nodes": [{"id": name, **_TRANSFORM} for name in ("start", "a", "b", "c")],
        "edges": [
            {"from": "start", "to": "a"},
            {"from": "a", "to": "b"},
            {"from": "b", "to": "c"},
            {"from": "c", "to": "a"},
        ],
    }
    with pytest.raises(InvalidDagError, match="cycle") as caught:
        parse_definition(definition, REGISTRY)
    found = re.search(r"cycle: ((?:\w+ -> )+\w+)", caught.value.message)
    assert found is not None
    names = found.group(1).split(" -> ")
    assert names[0] == names[-1]
    assert sorted(names[:-1]) == ["a", "b", "c"]
    # Whatever node it starts at, the cycle follows the edges' direction.
    assert found.group(1) in {"a -> b -> c -> a", "b -> c -> a -> b", "c -> a -> b -> c"}


def test_too_many_nodes_or_edges() -> None:
    nodes = [{"id": f"n{index}", **_TRANSFORM} for index in range(MAX_NODES + 1)]
    with pytest.raises(InvalidDagError, match="too many nodes"):
        parse_definition({"nodes": nodes, "edges": []}, REGISTRY)
    edges = [{"from": "n0", "to": "n1"}] * (MAX_EDGES + 1)
    with pytest.raises(InvalidDagError, match="too many edges"):
        parse_definition({"nodes": nodes[:2], "edges": edges}, REGISTRY)


def test_the_largest_allowed_workflow_is_accepted() -> None:
    nodes = [{"id": f"n{index}", **_TRANSFORM} for index in range(MAX_NODES)]
    edges = [{"from": f"n{index}", "to": f"n{index + 1}"} for index in range(MAX_NODES - 1)]
    dag: Dag = parse_definition({"nodes": nodes, "edges": edges}, REGISTRY)
    assert dag.order[0] == "n0"
    assert dag.order[-1] == f"n{MAX_NODES - 1}"


def test_every_problem_is_listed_in_fields() -> None:
    definition = example()
    definition["nodes"][4]["config"]["seconds"] = -1
    definition["nodes"][3]["config"]["output"]["title"] = "{{ x }"
    definition["edges"].append({"from": "wait", "to": "nowhere"})
    with pytest.raises(InvalidDagError, match=r"\(and 2 more problems\)") as caught:
        parse_definition(definition, REGISTRY)
    assert set(caught.value.fields) == {
        "definition.nodes[4].config.seconds",
        "definition.nodes[3].config.output.title",
        "definition.edges[6].to",
    }


def test_edges_of_a_broken_node_are_not_reported_again() -> None:
    definition = example()
    del definition["nodes"][0]["config"]["url"]
    with pytest.raises(InvalidDagError) as caught:
        parse_definition(definition, REGISTRY)
    assert list(caught.value.fields) == ["definition.nodes[0].config.url"]
