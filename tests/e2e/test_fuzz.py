"""A hostile-input pass over REST and GraphQL against a live server: no 5xx, nothing slow.

Hypothesis sends NUL characters, lone surrogates, ``NaN``/``1e400``/``10**400``, nesting up to
20,000 levels, strings up to 150,000 characters and bytes that are not JSON (strategies in
``tests/support/hostile.py``) into every write operation's fields, whole bodies, query strings,
path ids and GraphQL variables and literals, as a registered tenant's ADMIN. Every answer must
be below 500 (GraphQL errors must carry a code and never be ``INTERNAL``) and arrive within
``MAX_SECONDS``; afterwards the server still answers ``/api/health``. The figures (cases,
5xx, slowest answer) are printed.

``make test`` runs a short derandomized pass (``TREADLE_FUZZ_EXAMPLES``, default 40 cases
per API and server); ``make fuzz`` runs many more, with fresh random cases each time.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import PASSWORD
from tests.support.client import unique_email
from tests.support.hostile import encode, raw_bodies, text, values

MAX_SECONDS = 2.0  # the bound the issue sets for any single answer
EXAMPLES = int(os.environ.get("TREADLE_FUZZ_EXAMPLES", "40"))
RANDOM = os.environ.get("TREADLE_FUZZ_RANDOM") == "1"  # make fuzz: new cases every run
DAG: dict[str, Any] = {
    "nodes": [{"id": "shape", "type": "TRANSFORM", "config": {"output": {"n": "{{ input.n }}"}}}],
    "edges": [],
}
PASS_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,  # latency is measured per request instead
    derandomize=not RANDOM,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing case is reported as is
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Figures:
    label: str
    cases: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    max_seconds: float = 0.0
    slowest: str = ""

    def line(self) -> str:
        fives = sum(n for status, n in self.statuses.items() if status >= 500)
        shown = ", ".join(f"{status}: {n}" for status, n in sorted(self.statuses.items()))
        return (
            f"fuzz {self.label}: {self.cases} cases, {fives} 5xx, max latency "
            f"{self.max_seconds:.3f} s ({self.slowest}); statuses {{{shown}}}"
        )


@dataclass
class Target:
    http: httpx.Client
    workflow: str
    scratch: str
    run: str
    figures: Figures

    def send(self, method: str, url: str, body: bytes | None = None) -> httpx.Response:
        headers = {"content-type": "application/json"} if body is not None else {}
        started = time.monotonic()
        response = self.http.request(method, url, content=body, headers=headers)
        elapsed = time.monotonic() - started
        label = f"{method} {url.split('?')[0][:60]}"
        self.figures.cases += 1
        self.figures.statuses[response.status_code] += 1
        if elapsed > self.figures.max_seconds:
            self.figures.max_seconds, self.figures.slowest = elapsed, label
        assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
        assert elapsed < MAX_SECONDS, f"{label} took {elapsed:.2f} s"
        return response


@pytest.fixture
def target(
    server: str, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> Iterator[Target]:
    kind = request.node.callspec.params.get("server", "")
    figures = Figures(f"{request.node.name.split('[')[0].removeprefix('test_')} [{kind}]")
    with httpx.Client(base_url=server, timeout=30) as http:
        body = {
            "tenantName": "Fuzz",
            "email": unique_email("fz"),
            "password": PASSWORD,
            "name": "F",
        }
        token = http.post("/api/auth/register", json=body).json()["token"]
        http.headers["Authorization"] = f"Bearer {token}"
        ids = [http.post("/api/workflows", json={"name": "f", "definition": DAG}).json()["id"]]
        ids.append(http.post("/api/workflows", json={"name": "s", "definition": DAG}).json()["id"])
        run = http.post(f"/api/workflows/{ids[0]}/execute", json={"input": {"n": 1}}).json()["id"]
        try:
            yield Target(http, ids[0], ids[1], run, figures)
        finally:
            with capsys.disabled():
                print(f"\n{figures.line()}")  # noqa: T201 - the figures the README quotes
        health = http.get("/api/health", timeout=10)
        assert health.status_code == 200, health.text


# --- REST -------------------------------------------------------------------------------------

REST_WRITES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "POST",
        "/api/auth/register",
        {"tenantName": "T", "email": "", "password": PASSWORD, "name": "N"},
    ),
    ("POST", "/api/auth/login", {"email": "nobody@example.test", "password": PASSWORD}),
    ("POST", "/api/users", {"email": "", "password": PASSWORD, "name": "N", "role": "MEMBER"}),
    ("POST", "/api/workflows", {"name": "n", "description": "d", "definition": DAG}),
    ("PUT", "/api/workflows/{scratch}", {"name": "n", "description": "d", "definition": DAG}),
    ("POST", "/api/workflows/{workflow}/execute", {"input": {"n": 1}}),
]
REST_READS = [
    "/api/workflows?page={v}&pageSize={v}",
    "/api/workflows/{v}",
    "/api/workflows/{workflow}/runs?status={v}&page={v}",
    "/api/runs/{v}",
    "/api/runs/{run}/events?afterSeq={v}&limit={v}",
]


def _with(body: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    body = {**body, "email": body["email"] or unique_email("fz")} if "email" in body else body
    if name == "definition.node":  # hostile content inside an otherwise valid definition
        node = {"id": "shape", "type": "TRANSFORM", "config": {"output": value}}
        return {**body, "definition": {"nodes": [node], "edges": []}}
    return {**body, name: value}


@dataclass(frozen=True)
class RestCase:
    method: str
    path: str
    body: bytes | None = None

    def __repr__(self) -> str:  # bodies run to megabytes: show their start
        shown = None if self.body is None else self.body[:200]
        size = len(self.body or b"")
        return f"RestCase({self.method} {self.path[:200]}, body={shown!r}, {size} bytes)"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:  # Hypothesis' reports
        printer.text(repr(self))


def _node_with(value: Any) -> RestCase:
    body = {
        "name": "n",
        "definition": {
            "nodes": [{"id": "shape", "type": "TRANSFORM", "config": {"output": value}}],
            "edges": [],
        },
    }
    return RestCase("POST", "/api/workflows", encode(body))


@st.composite
def rest_cases(draw: st.DrawFn) -> RestCase:
    kind = draw(st.sampled_from(["field", "body", "read"]))
    if kind == "read":
        template = draw(st.sampled_from(REST_READS))
        quoted = urllib.parse.quote(draw(text).encode("utf-8", "surrogatepass"), safe="")
        return RestCase("GET", template.replace("{v}", quoted))
    method, path, body = draw(st.sampled_from(REST_WRITES))
    if kind == "body":
        return RestCase(method, path, draw(raw_bodies))
    names = [*body, "definition.node"] if "definition" in body else list(body)
    return RestCase(method, path, encode(_with(body, draw(st.sampled_from(names)), draw(values))))


@given(case=rest_cases())
@example(case=_node_with("a\x00b"))
@example(case=_node_with({"k": "\ud800"}))
@example(case=_node_with(float("inf")))
@example(case=_node_with(10**400))
@example(case=_node_with("{" * 150_000))
@example(case=RestCase("POST", "/api/auth/login", b"[" * 10_000 + b"]" * 10_000))
@example(case=RestCase("POST", "/api/auth/login", b'{"email": "\xff"}'))
@PASS_SETTINGS
def test_rest(target: Target, case: RestCase) -> None:
    url = case.path.format(workflow=target.workflow, scratch=target.scratch, run=target.run)
    target.send(case.method, url, case.body)


def test_long_letter_runs_in_a_definition(target: Target) -> None:
    """The fuzzer's rarest hostile case, always: 30,000 letters in a definition."""
    target.send("POST", "/api/workflows", _node_with("a" * 30_000).body)


# --- GraphQL ----------------------------------------------------------------------------------

GRAPHQL: list[tuple[str, dict[str, Any]]] = [
    ("mutation($i: RegisterInput!) { register(input: $i) { token } }",
     {"i": {"tenantName": "T", "email": "", "password": PASSWORD, "name": "N"}}),
    ("mutation($i: LoginInput!) { login(input: $i) { token } }",
     {"i": {"email": "nobody@example.test", "password": PASSWORD}}),
    ("mutation($i: CreateUserInput!) { createUser(input: $i) { id } }",
     {"i": {"email": "", "password": PASSWORD, "name": "N", "role": "MEMBER"}}),
    ("mutation($i: WorkflowInput!) { createWorkflow(input: $i) { id definition } }",
     {"i": {"name": "n", "description": "d", "definition": DAG}}),
    ("mutation($id: ID!, $i: WorkflowUpdateInput!) { updateWorkflow(id: $id, input: $i) { id } }",
     {"id": "{scratch}", "i": {"name": "n", "definition": DAG}}),
    ("mutation($id: ID!, $i: JSON, $k: String) { executeWorkflow(id: $id, input: $i, idempotencyKey: $k) { id } }",  # noqa: E501
     {"id": "{workflow}", "i": {"n": 1}, "k": "key"}),
    ("query($p: Int, $s: Int) { workflows(page: $p, pageSize: $s) { total } }", {"p": 1, "s": 5}),
    ("query($w: ID, $s: RunStatus) { runs(workflowId: $w, status: $s) { total } }",
     {"w": "{workflow}", "s": "COMPLETED"}),
    ("query($id: ID!) { run(id: $id) { id steps { id } } }", {"id": "{run}"}),
    ("query($id: ID!, $a: Int, $l: Int) { runEvents(runId: $id, afterSeq: $a, limit: $l) { seq } }",
     {"id": "{run}", "a": 0, "l": 10}),
]  # fmt: skip


LITERALS = [  # hostile text written into the document itself, not passed as a variable
    'mutation { login(input: {email: LIT, password: "pw"}) { token } }',
    "query { workflow(id: LIT) { id } }",
    "mutation { createWorkflow(input: {name: LIT, definition: {nodes: []}}) { id } }",
]


@dataclass(frozen=True)
class GraphQLCase:
    query: str
    variables: dict[str, Any]
    raw: bytes | None = None
    name: str = ""  # the variable (or "variable.field") replaced by ``value``
    value: Any = None

    def __repr__(self) -> str:  # values run to megabytes: show their start
        body = self.raw if self.raw is not None else encode(self.value)
        return f"GraphQLCase({self.query[:80]!r}, {self.name or 'raw'}={body[:200]!r})"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:  # Hypothesis' reports
        printer.text(repr(self))


@st.composite
def graphql_cases(draw: st.DrawFn) -> GraphQLCase:
    query, variables = draw(st.sampled_from(GRAPHQL))
    kind = draw(st.sampled_from(["variable", "field", "literal", "raw"]))
    if kind == "raw":
        return GraphQLCase(query, variables, raw=draw(raw_bodies))
    if kind == "literal":
        literal = json.dumps(draw(text))  # JSON string escapes are GraphQL string escapes
        return GraphQLCase(draw(st.sampled_from(LITERALS)).replace("LIT", literal), {})
    name = draw(st.sampled_from(sorted(variables)))
    if kind == "field" and isinstance(variables[name], dict):
        name = f"{name}.{draw(st.sampled_from(sorted(variables[name])))}"
    return GraphQLCase(query, variables, name=name, value=draw(values))


def _variables(case: GraphQLCase, target: Target) -> dict[str, Any]:
    """The template's variables with real ids and a fresh email, then the hostile value."""
    ids = {"{workflow}": target.workflow, "{scratch}": target.scratch, "{run}": target.run}

    def fill(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: fill(item) for key, item in value.items()}
        if value == "":
            return unique_email("fz")
        return ids.get(value, value) if isinstance(value, str) else value

    variables: dict[str, Any] = fill(case.variables)
    if case.name:
        outer, _, inner = case.name.partition(".")
        if inner:
            variables[outer] = {**variables[outer], inner: case.value}
        else:
            variables[outer] = case.value
    return variables


@given(case=graphql_cases())
@PASS_SETTINGS
def test_graphql(target: Target, case: GraphQLCase) -> None:
    body = case.raw
    if body is None:
        body = encode({"query": case.query, "variables": _variables(case, target)})
    response = target.send("POST", "/graphql", body)
    errors = response.json().get("errors") or []
    codes = [(error.get("extensions") or {}).get("code") for error in errors]
    assert None not in codes, errors
    assert "INTERNAL" not in codes, errors
