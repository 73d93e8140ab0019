"""What browser apps and generated clients rely on: CORS, the stream's schema, one spelling."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.e2e.conftest import SIMPLE_DAG, Account
from tests.support.client import Api
from tests.support.live import LiveServer

APP_ORIGIN = "http://app.example.test"
INSTANT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture(scope="module")
def cors_server(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(
        sqlite_url, tmp_path_factory.mktemp("cors"), treadle_cors_origins=f" {APP_ORIGIN} ,"
    )
    with LiveServer.api(settings) as server:
        yield server.base_url


def _preflight(base_url: str, path: str, origin: str, method: str = "POST") -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    return httpx.options(f"{base_url}{path}", headers=headers)


@pytest.mark.parametrize("path", ["/api/workflows", "/graphql"])
def test_a_preflight_from_an_allowed_origin_is_answered(cors_server: str, path: str) -> None:
    response = _preflight(cors_server, path, APP_ORIGIN)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers
    assert "content-type" in allowed_headers
    # The real request then carries the header too, so the browser lets the page read it.
    health = httpx.get(f"{cors_server}/api/health", headers={"Origin": APP_ORIGIN})
    assert health.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "x-request-id" in health.headers["access-control-expose-headers"].lower()


def test_other_origins_get_no_allow_origin(cors_server: str, sqlite_server: str) -> None:
    refused = _preflight(cors_server, "/api/workflows", "http://evil.example.test")
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    plain = httpx.get(f"{cors_server}/api/health", headers={"Origin": "http://evil.example.test"})
    assert "access-control-allow-origin" not in plain.headers
    # By default no origin is allowed: the preflight is not answered with CORS headers.
    default = _preflight(sqlite_server, "/api/workflows", APP_ORIGIN)
    assert "access-control-allow-origin" not in default.headers


def test_the_event_stream_is_described_as_text(sqlite_server: str) -> None:
    document = httpx.get(f"{sqlite_server}/api/openapi.json").json()
    ok = document["paths"]["/api/runs/{id}/stream"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/event-stream"]
    assert ok["content"]["text/event-stream"]["schema"]["type"] == "string"
    assert "StreamEvent" in document["components"]["schemas"]  # still documented per event


def test_timestamps_end_in_z_over_both_apis(api: Api, alice: Account) -> None:
    flow = api.create_workflow(alice.token, name="times", definition=SIMPLE_DAG)
    run = api.execute(alice.token, flow["id"], {"n": 1})
    events = api.events(alice.token, run["id"])
    stamps = [flow["createdAt"], flow["updatedAt"], run["createdAt"]]
    items = events["items"] if isinstance(events, dict) else events  # REST pages, GraphQL lists
    stamps += [event["createdAt"] for event in items]
    assert stamps
    for stamp in stamps:
        assert INSTANT.match(stamp), stamp


@pytest.fixture(scope="module")
def broken_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose database has no tables: every query is an unexpected error (a 500)."""
    data = Path(tmp_path_factory.mktemp("broken"))
    settings = make_settings(f"sqlite+aiosqlite:///{data / 'empty.db'}", data)
    with LiveServer.api(settings) as server:
        yield server.base_url


def test_the_internal_error_id_is_request_id_over_both_apis(broken_server: str) -> None:
    login = {"email": "a@example.test", "password": "whatever1"}
    rest = httpx.post(f"{broken_server}/api/auth/login", json=login)
    assert rest.status_code == 500
    error = rest.json()["error"]
    assert error["code"] == "INTERNAL"
    assert error["requestId"] == rest.headers["x-request-id"]
    query = "mutation($i: LoginInput!) { login(input: $i) { token } }"
    gql = httpx.post(f"{broken_server}/graphql", json={"query": query, "variables": {"i": login}})
    extensions = gql.json()["errors"][0]["extensions"]
    assert extensions["code"] == "INTERNAL"
    assert set(extensions) == {"code", "requestId"}
    assert extensions["requestId"] == gql.headers["x-request-id"]
