"""Workflow definitions: the DAG a workflow stores, parsed and validated.

Invariants:
- A ``Dag`` comes from ``parse_definition``, which enforces every rule of the contract (ids,
  types, configs, template syntax, edges, condition branches, no cycles) and reports each
  violation in ``InvalidDagError.fields`` under a path such as ``definition.nodes[1].config.url``.
- A ``Dag``'s mappings are read-only; ``order`` is a topological order of all nodes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from types import MappingProxyType
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, ValidationError

from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import StepRegistry
from treadle.engine.template import TemplateEngine, TemplateError
from treadle.engine.triggers import MAX_TRIGGERS, TRIGGER, CronTrigger, WebhookTrigger, with_id
from treadle.errors import InvalidDagError

MAX_NODES: Final = 1_000
MAX_EDGES: Final = 5_000
CONDITION: Final = "CONDITION"  # the one node type whose outgoing edges carry "when"
NODE_ID: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_MAX_REPORTED: Final = 100  # problems listed in ``fields``; the message counts them all

_MODEL_CONFIG: Final = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RetryPolicy(BaseModel):
    """How often a failing node is attempted and how long to wait between attempts."""

    model_config = _MODEL_CONFIG

    max_attempts: int = Field(4, ge=1, le=20, alias="maxAttempts")
    backoff_seconds: float = Field(1.0, ge=0, le=3600, alias="backoffSeconds")
    max_backoff_seconds: float = Field(300.0, ge=0, le=86_400, alias="maxBackoffSeconds")


class NodeSpec(BaseModel):
    """One node as written in the definition; ``config`` is checked by its step type."""

    model_config = _MODEL_CONFIG

    id: str = Field(pattern=NODE_ID.pattern)
    type: str
    config: dict[str, JsonValue] = Field(default_factory=dict)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: float = Field(300.0, gt=0, le=86_400, alias="timeoutSeconds")


class EdgeSpec(BaseModel):
    """An edge ``from`` → ``to``; ``when`` picks a CONDITION node's branch."""

    model_config = _MODEL_CONFIG

    source: str = Field(alias="from")
    target: str = Field(alias="to")
    when: StrictBool | None = None


@dataclass(frozen=True, slots=True)
class Dag:
    """A validated workflow definition, indexed for planning."""

    nodes: Mapping[str, NodeSpec]  # in definition order
    configs: Mapping[str, BaseModel]  # each node's config, validated by its step type
    edges: tuple[EdgeSpec, ...]  # in definition order
    parents: Mapping[str, tuple[EdgeSpec, ...]]  # incoming edges of each node
    children: Mapping[str, tuple[EdgeSpec, ...]]  # outgoing edges of each node
    order: tuple[str, ...]  # a topological order
    triggers: tuple[CronTrigger | WebhookTrigger, ...] = ()  # each with its id filled in

    @property
    def roots(self) -> tuple[str, ...]:
        """Nodes without incoming edges, in definition order; they start with the run."""
        return tuple(node_id for node_id in self.nodes if not self.parents[node_id])

    def to_json(self) -> JSONObject:
        """The canonical definition as stored (defaults filled in, ``from``/``to`` edge keys)."""
        nodes: list[JSON] = [
            node.model_dump(mode="json", by_alias=True) for node in self.nodes.values()
        ]
        edges: list[JSON] = [
            edge.model_dump(mode="json", by_alias=True, exclude_none=True) for edge in self.edges
        ]
        canonical: JSONObject = {"nodes": nodes, "edges": edges}
        if self.triggers:
            canonical["triggers"] = [
                trigger.model_dump(mode="json", by_alias=True) for trigger in self.triggers
            ]
        return canonical


def parse_definition(
    raw: object, registry: StepRegistry, *, templates: TemplateEngine | None = None
) -> Dag:
    """Validate a workflow definition against the contract and index it.

    Args:
        raw: The definition as decoded from JSON.
        registry: The known step types, by name.
        templates: Engine used to check template syntax (a shared default when omitted).

    Raises:
        InvalidDagError: the definition breaks a rule; the message names the node or edge and
            ``fields`` maps each problem's path to its description.
    """
    raw_nodes, raw_edges = _top_level(raw)
    parser = _Parser(registry, templates or _default_templates())
    for index, raw_node in enumerate(raw_nodes):
        parser.node(index, raw_node)
    for index, raw_edge in enumerate(raw_edges):
        parser.edge(index, raw_edge)
    triggers = _triggers(raw.get("triggers", []) if isinstance(raw, dict) else [], parser)
    parser.problems.raise_if_any()
    return _build(parser.specs, parser.configs, parser.edges, triggers)


def _triggers(raw: object, parser: _Parser) -> tuple[CronTrigger | WebhookTrigger, ...]:
    """The definition's ``triggers`` (see ``engine.triggers``), ids filled in and unique."""
    where = "definition.triggers"
    if not isinstance(raw, list) or len(raw) > MAX_TRIGGERS:
        parser.problems.add(where, f'"triggers" must be a list of at most {MAX_TRIGGERS} triggers')
        return ()
    found: dict[str, CronTrigger | WebhookTrigger] = {}
    for index, item in enumerate(raw):
        try:
            trigger = with_id(TRIGGER.validate_python(item), index + 1)
        except ValidationError as exc:
            for error in exc.errors():
                loc = error["loc"]
                path = _path("", loc[1:] if loc and loc[0] in ("cron", "webhook") else loc)
                field = f"{where}[{index}].{path}" if path else f"{where}[{index}]"
                parser.problems.add(field, f"triggers[{index}]: {path or 'type'}: {_reason(error)}")
            continue
        assert trigger.id is not None  # noqa: S101 - with_id fills it in
        if trigger.id in found:
            message = f"triggers[{index}]: id {trigger.id!r} is used twice"
            parser.problems.add(f"{where}[{index}].id", message)
            continue
        found[trigger.id] = trigger
    return tuple(found.values())


@functools.cache
def _default_templates() -> TemplateEngine:
    return TemplateEngine()


class _Problems:
    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.messages: list[str] = []

    def add(self, field: str, message: str) -> None:
        if len(self.fields) < _MAX_REPORTED:
            self.fields.setdefault(field, message)
        self.messages.append(message)

    def raise_if_any(self) -> None:
        if not self.messages:
            return
        more = len(self.messages) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise InvalidDagError(self.messages[0] + suffix, fields=self.fields)


def _top_level(raw: object) -> tuple[list[Any], list[Any]]:
    if not isinstance(raw, dict):
        message = 'the definition must be a JSON object with "nodes" and "edges"'
        raise InvalidDagError(message, fields={"definition": message})
    problems = _Problems()
    for key in sorted(set(raw) - {"nodes", "edges", "triggers"}, key=str):
        message = f'unknown field {key!r}; use "nodes", "edges" and "triggers"'
        problems.add(f"definition.{key}", message)
    nodes, edges = raw.get("nodes"), raw.get("edges", [])
    if not isinstance(nodes, list) or not nodes:
        problems.add("definition.nodes", '"nodes" must be a non-empty list of nodes')
    elif len(nodes) > MAX_NODES:
        problems.add("definition.nodes", f"too many nodes ({len(nodes):,}; at most {MAX_NODES:,})")
    if not isinstance(edges, list):
        problems.add("definition.edges", '"edges" must be a list of edges')
    elif len(edges) > MAX_EDGES:
        problems.add("definition.edges", f"too many edges ({len(edges):,}; at most {MAX_EDGES:,})")
    problems.raise_if_any()
    return list(nodes or []), list(edges or [])  # both checked to be lists above


class _Parser:
    """Collects nodes and edges, and every problem found along the way."""

    def __init__(self, registry: StepRegistry, templates: TemplateEngine) -> None:
        self.registry = registry
        self.templates = templates
        self.problems = _Problems()
        self.ids: dict[
            str, int
        ] = {}  # every well-formed id, so edges to a broken node don't pile up
        self.types: dict[str, str] = {}
        self.specs: dict[str, NodeSpec] = {}
        self.configs: dict[str, BaseModel] = {}
        self.edges: list[EdgeSpec] = []
        self.pairs: dict[tuple[str, str], int] = {}

    def node(self, index: int, raw: object) -> None:
        where = f"definition.nodes[{index}]"
        if not isinstance(raw, dict):
            self.problems.add(where, f"nodes[{index}] must be an object with an id and a type")
            return
        node_id = raw.get("id")
        if not isinstance(node_id, str) or not NODE_ID.match(node_id):
            self.problems.add(f"{where}.id", _bad_id(index, node_id))
            return
        label = f"node {node_id!r}"
        if node_id in self.ids:
            message = (
                f"nodes[{index}]: id {node_id!r} is already used by nodes[{self.ids[node_id]}]"
            )
            self.problems.add(f"{where}.id", message)
            return
        self.ids[node_id] = index
        try:
            spec = NodeSpec.model_validate(raw)
        except ValidationError as exc:
            self._pydantic(exc, where, label, "")
            return
        self.types[node_id] = spec.type
        step = self.registry.get(spec.type)
        if step is None:
            known = ", ".join(sorted(self.registry))
            message = f"{label}: unknown type {spec.type!r}; known types: {known}"
            self.problems.add(f"{where}.type", message)
            return
        try:
            config = step.config_model.model_validate(spec.config)
        except ValidationError as exc:
            self._pydantic(exc, where, label, "config")
            return
        if self._templates_ok(spec, where, label):
            self.specs[node_id] = spec
            self.configs[node_id] = config

    def edge(self, index: int, raw: object) -> None:
        where = f"definition.edges[{index}]"
        if not isinstance(raw, dict):
            self.problems.add(where, f'edges[{index}] must be an object with "from" and "to"')
            return
        try:
            edge = EdgeSpec.model_validate(raw)
        except ValidationError as exc:
            ends = (raw.get("from"), raw.get("to"))
            named = all(isinstance(end, str) for end in ends)
            self._pydantic(
                exc, where, f"edge {ends[0]} -> {ends[1]}" if named else f"edges[{index}]", ""
            )
            return
        problem = self._edge_problem(edge)
        if problem is not None:
            field, message = problem
            self.problems.add(f"{where}{field}", f"edge {edge.source} -> {edge.target}: {message}")
            return
        self.pairs[(edge.source, edge.target)] = index
        self.edges.append(edge)

    def _edge_problem(self, edge: EdgeSpec) -> tuple[str, str] | None:
        for field, node_id in ((".from", edge.source), (".to", edge.target)):
            if node_id not in self.ids:
                return field, f"there is no node {node_id!r}"
        if edge.source == edge.target:
            return "", "a node cannot be connected to itself"
        if (edge.source, edge.target) in self.pairs:
            return "", f"duplicate of edges[{self.pairs[(edge.source, edge.target)]}]"
        source_type = self.types.get(edge.source)
        if source_type == CONDITION and edge.when is None:
            return (
                ".when",
                f'edges leaving CONDITION node {edge.source!r} need "when": true or false',
            )
        if source_type not in (None, CONDITION) and edge.when is not None:
            message = f'"when" is only for edges leaving a CONDITION node; {edge.source!r} is a'
            return ".when", f"{message} {source_type}"
        return None

    def _templates_ok(self, spec: NodeSpec, where: str, label: str) -> bool:
        ok = True
        for source, path in _strings(spec.config, "config"):
            try:
                self.templates.check_template(source)
            except TemplateError as exc:
                self.problems.add(f"{where}.{path}", f"{label}: {path}: {exc.message}")
                ok = False
        expression = spec.config.get("expression")
        if spec.type == CONDITION and isinstance(expression, str):
            try:
                self.templates.check_expression(expression)
            except TemplateError as exc:
                message = f"{label}: config.expression: {exc.message}"
                self.problems.add(f"{where}.config.expression", message)
                ok = False
        return ok

    def _pydantic(self, exc: ValidationError, where: str, label: str, prefix: str) -> None:
        for error in exc.errors():
            path = _path(prefix, error["loc"])
            field = f"{where}.{path}" if path else where
            self.problems.add(field, f"{label}: {path or 'node'}: {_reason(error)}")


def _bad_id(index: int, node_id: object) -> str:
    if node_id is None:
        return f"nodes[{index}]: id is required"
    return (
        f"nodes[{index}]: id {node_id!r} is invalid; an id starts with a letter and holds only "
        "letters, digits and underscores (at most 64 characters)"
    )


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def _reason(error: Any) -> str:
    if error["type"] == "missing":
        return "field required"
    if error["type"] == "extra_forbidden":
        return "unknown field"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:]


def _strings(value: JSON, path: str) -> Iterator[tuple[str, str]]:
    """Every string in ``value``, dict keys included, with its path."""
    if isinstance(value, str):
        yield value, path
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key, f"{path}.{key}"
            yield from _strings(item, f"{path}.{key}")


def _build(
    specs: dict[str, NodeSpec],
    configs: dict[str, BaseModel],
    edges: list[EdgeSpec],
    triggers: tuple[CronTrigger | WebhookTrigger, ...] = (),
) -> Dag:
    parents: dict[str, list[EdgeSpec]] = {node_id: [] for node_id in specs}
    children: dict[str, list[EdgeSpec]] = {node_id: [] for node_id in specs}
    for edge in edges:
        parents[edge.target].append(edge)
        children[edge.source].append(edge)
    graph = {node_id: [edge.source for edge in incoming] for node_id, incoming in parents.items()}
    try:
        order = tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        cycle = " -> ".join(exc.args[1])  # args[1] lists the cycle's nodes, first one repeated
        message = f"the workflow has a cycle: {cycle}; remove one of these edges"
        raise InvalidDagError(message, fields={"definition.edges": f"cycle: {cycle}"}) from exc
    return Dag(
        nodes=MappingProxyType(dict(specs)),
        configs=MappingProxyType(dict(configs)),
        edges=tuple(edges),
        parents=MappingProxyType({key: tuple(value) for key, value in parents.items()}),
        children=MappingProxyType({key: tuple(value) for key, value in children.items()}),
        order=order,
        triggers=triggers,
    )
