"""Hostile input is a 400 ``VALIDATION_ERROR`` naming the field, never a 500.

NUL characters, lone surrogates, ``NaN``/``1e400``, bodies that are not objects, invalid UTF-8
and absurd nesting, over REST and GraphQL (HTTP and websockets), on embedded SQLite and on
PostgreSQL (which refuses NUL in text and ``jsonb``: these were 500s there).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.e2e.conftest import PASSWORD, Account, register
from tests.support.client import Api, ApiError, unique_email
from tests.support.live import LiveServer
from tests.support.ws import RUN_EVENTS, GraphQLWs, WsClosedError, rest_client
from treadle.migrate import upgrade

NUL = "a\u0000b"
OK_DAG: dict[str, Any] = {
    "nodes": [{"id": "shape", "type": "TRANSFORM", "config": {"output": {"n": 1}}}],
    "edges": [],
}


def _dag_with(text: str) -> dict[str, Any]:
    node = {"id": "shape", "type": "TRANSFORM", "config": {"output": {"n": text}}}
    return {"nodes": [node], "edges": []}


def _expect_400(call: Callable[[], Any], field: str) -> None:
    with pytest.raises(ApiError) as caught:
        call()
    assert (caught.value.status, caught.value.code) == (400, "VALIDATION_ERROR"), caught.value
    assert field in caught.value.message


@pytest.fixture
def caller(server: str) -> Account:
    """A tenant's ADMIN for the tests that send raw requests (no ``api`` parametrization)."""
    with rest_client(server) as rest:
        return register(rest, "Raw")


@pytest.fixture
def workflow(api: Api, alice: Account) -> str:
    created: str = api.create_workflow(alice.token, name="ok", definition=OK_DAG)["id"]
    return created


def test_nul_in_auth_fields_is_a_validation_error(api: Api, alice: Account) -> None:
    good = {"tenant": "T", "email": unique_email("nul"), "password": PASSWORD, "name": "N"}
    for field in ("tenant", "email", "password", "name"):
        args = {**good, field: NUL + "@x.example" if field == "email" else NUL * 5}
        shown = "tenantName" if field == "tenant" else field
        _expect_400(lambda args=args: api.register(**args), shown)  # type: ignore[misc]
    _expect_400(lambda: api.login(NUL, PASSWORD), "email")
    _expect_400(lambda: api.login(alice.email, NUL * 5), "password")
    user = {"email": unique_email("member"), "password": PASSWORD, "name": "M"}
    for field in ("email", "password", "name"):
        body = {**user, field: NUL * 5}
        _expect_400(lambda body=body: api.create_user(alice.token, **body), field)  # type: ignore[misc]


def test_nul_in_workflow_fields_is_a_validation_error(
    api: Api, alice: Account, workflow: str
) -> None:
    token = alice.token
    _expect_400(lambda: api.create_workflow(token, name=NUL, definition=OK_DAG), "name")
    _expect_400(
        lambda: api.create_workflow(token, name="n", description=NUL, definition=OK_DAG),
        "description",
    )
    _expect_400(
        lambda: api.create_workflow(token, name="n", definition=_dag_with(NUL)),
        "definition.nodes.0.config.output.n",
    )
    _expect_400(lambda: api.update_workflow(token, workflow, name=NUL), "name")
    _expect_400(lambda: api.execute(token, workflow, {"k": NUL}), ".k: must not contain NUL")
    _expect_400(lambda: api.execute(token, workflow, {NUL: 1}), "has a key that must not")
    assert api.get_workflow(token, workflow)["version"] == 1  # nothing was changed


def test_graphql_literals_are_checked_like_variables(server: str) -> None:
    """A NUL written as a GraphQL string escape never passes through JSON: services check it."""
    query = 'mutation { login(input: {email: "x\\u0000@y.example", password: "pw"}) { token } }'
    body = httpx.post(f"{server}/graphql", json={"query": query}).json()
    error = body["errors"][0]
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert "email" in error["extensions"]["fields"]


# --- GraphQL over HTTP: bodies Strawberry used to choke on -------------------------------------

WORKFLOWS = "query($p: Int) { workflows(page: $p) { total } }"
LOGIN = "mutation($i: LoginInput!) { login(input: $i) { token } }"
EXECUTE = 'mutation($i: JSON) { executeWorkflow(id: "00000000-0000-0000-0000-000000000000", input: $i) { id } }'  # noqa: E501


def _body(query: str, variables: str) -> bytes:
    return f'{{"query": {json.dumps(query)}, "variables": {variables}}}'.encode()


GRAPHQL_BODIES = {
    "nan": _body(WORKFLOWS, '{"p": NaN}'),
    "infinity": _body(WORKFLOWS, '{"p": Infinity}'),
    "1e400": _body(WORKFLOWS, '{"p": 1e400}'),
    "lone-surrogate": _body(LOGIN, '{"i": {"email": "\\ud800", "password": "pw"}}'),
    "nul": _body(LOGIN, '{"i": {"email": "a\\u0000@b.example", "password": "pw"}}'),
    "nul-key": _body(EXECUTE, '{"i": {"a\\u0000": 1}}'),
    "number": b"123",
    "null": b"null",
    "string": b'"query"',
    "list": b"[]",
    "invalid-utf8": b'{"query": "{ health { status } }\xff\xfe"}',
    "deep-variables": _body(EXECUTE, '{"i": ' + "[" * 10_000 + "]" * 10_000 + "}"),
    "deep-129": _body(EXECUTE, '{"i": ' + "[" * 129 + "]" * 129 + "}"),
    "subscription": json.dumps({"query": RUN_EVENTS, "variables": {"r": "x"}}).encode(),
    "not-json": b"{",
}


@pytest.mark.parametrize("name", list(GRAPHQL_BODIES))
def test_bad_graphql_bodies_are_400_with_a_code(server: str, caller: Account, name: str) -> None:
    response = httpx.post(
        f"{server}/graphql",
        content=GRAPHQL_BODIES[name],
        headers={"content-type": "application/json", "authorization": f"Bearer {caller.token}"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    errors = response.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["VALIDATION_ERROR"]
    assert "internal" not in errors[0]["message"].lower()


def test_bad_field_paths_are_named(server: str) -> None:
    response = httpx.post(
        f"{server}/graphql",
        content=GRAPHQL_BODIES["nul"],
        headers={"content-type": "application/json"},
    )
    assert response.json()["errors"][0]["extensions"]["fields"] == {
        "variables.i.email": "must not contain NUL characters"
    }


REST_BODIES = {
    "nan": b'{"email": "a@b.example", "password": NaN}',
    "1e400": b'{"email": "a@b.example", "password": 1e400}',
    "lone-surrogate": b'{"email": "\\udc00@b.example", "password": "pw"}',
    "nul": b'{"email": "a\\u0000@b.example", "password": "pw"}',
    "number": b"123",
    "null": b"null",
    "invalid-utf8": b'{"email": "\xff@b.example", "password": "pw"}',
    "deep": b'{"email": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
}


@pytest.mark.parametrize("name", list(REST_BODIES))
def test_bad_rest_bodies_are_400(server: str, name: str) -> None:
    response = httpx.post(
        f"{server}/api/auth/login",
        content=REST_BODIES[name],
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


# --- variables graphql-core cannot coerce are the client's mistake ----------------------------

COERCION = {
    "wrong-type": (WORKFLOWS, {"p": "abc"}),
    "float-for-int": (WORKFLOWS, {"p": 1.5}),
    "unknown-enum": ("query($s: RunStatus) { runs(status: $s) { total } }", {"s": "NOPE"}),
    "missing-required": ("query($p: Int!) { workflows(page: $p) { total } }", {}),
    "null-for-required": (LOGIN, {"i": None}),
    "unknown-input-field": (LOGIN, {"i": {"email": "a", "password": "b", "extra": 1}}),
}


@pytest.mark.parametrize("name", list(COERCION))
def test_uncoercible_variables_are_validation_errors(
    server: str, caller: Account, name: str
) -> None:
    query, variables = COERCION[name]
    response = httpx.post(
        f"{server}/graphql",
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {caller.token}"},
    )
    errors = response.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["VALIDATION_ERROR"] * len(errors)


# --- websockets: every error has a code; a frame too deep to parse closes cleanly -------------


@pytest.fixture(scope="module")
def ws_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path: Path = tmp_path_factory.mktemp("badws")
    url = f"sqlite+aiosqlite:///{path / 'ws.db'}"
    upgrade(url)
    settings = make_settings(
        url, path, treadle_env="production", treadle_max_subscriptions_per_connection=1
    )
    with LiveServer.embedded(settings) as server:
        yield server.base_url


@pytest.fixture(scope="module")
def ws_account(ws_server: str) -> Account:
    with rest_client(ws_server) as rest:
        return register(rest, "Sockets")


async def _errors(ws: GraphQLWs, query: str, variables: dict[str, Any]) -> list[Any]:
    op = await ws.subscribe(query, variables)
    collected = await ws.collect(op, seconds=20)
    assert collected.errors, collected
    return collected.errors


async def test_websocket_errors_carry_codes(ws_server: str, ws_account: Account) -> None:
    async with GraphQLWs.connect(ws_server, ws_account.token) as ws:
        unknown = await _errors(ws, "subscription { runEvent(runId: 1) { seq } }", {})
        assert "Did you mean" not in unknown[0]["message"]  # production: no schema hints
        wrong_type = await _errors(ws, RUN_EVENTS, {"r": "x", "a": "not a number"})
        missing = await _errors(ws, RUN_EVENTS, {})
        not_found = await _errors(ws, RUN_EVENTS, {"r": "00000000-0000-0000-0000-000000000000"})
        nul = await _errors(ws, LOGIN, {"i": {"email": NUL, "password": "pw"}})
        for errors in (unknown, wrong_type, missing, nul):
            assert [e["extensions"]["code"] for e in errors] == ["VALIDATION_ERROR"] * len(errors)
        assert [e["extensions"]["code"] for e in not_found] == ["NOT_FOUND"]


async def test_the_connection_limit_error_has_a_code(ws_server: str, ws_account: Account) -> None:
    with rest_client(ws_server) as rest:
        nodes = [{"id": "wait", "type": "DELAY", "config": {"seconds": 60}}]
        workflow = rest.create_workflow(
            ws_account.token, name="Long", definition={"nodes": nodes, "edges": []}
        )
        run_id = str(rest.execute(ws_account.token, workflow["id"])["id"])
        async with GraphQLWs.connect(ws_server, ws_account.token) as ws:
            first = await ws.run_events(run_id)
            assert (await ws.next_for(first))["type"] == "next"
            second = await ws.collect(await ws.run_events(run_id))
            assert [e["extensions"]["code"] for e in second.errors] == ["RATE_LIMITED"]
        rest.cancel(ws_account.token, run_id)


@pytest.mark.parametrize("depth", [100_000, 200])
async def test_a_deeply_nested_frame_closes_the_socket_with_4400(
    ws_server: str, ws_account: Account, depth: int
) -> None:
    async with GraphQLWs.connect(ws_server, ws_account.token, max_size=None) as ws:
        variables = "[" * depth + "]" * depth
        frame = '{"id": "1", "type": "subscribe", "payload": {"query": "{ me { id } }", '
        await ws.conn.send(frame + f'"variables": {{"v": {variables}}}}}}}')
        with pytest.raises(WsClosedError) as closed:
            await ws.recv(20)
        assert closed.value.code == 4400
    # The server is fine afterwards.
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{ws_server}/api/health")).status_code == 200
