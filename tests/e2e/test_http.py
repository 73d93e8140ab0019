"""HTTP-level behaviour: health, body limits, unknown routes, malformed JSON, GraphQL limits."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import Account, register
from tests.support.client import RestApi


def test_health(server: str) -> None:
    response = httpx.get(f"{server}/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "queue": "ok"}
    body = httpx.post(f"{server}/graphql", json={"query": "{ health { status database queue } }"})
    assert body.json()["data"]["health"] == {"status": "ok", "database": "ok", "queue": "ok"}


@pytest.mark.parametrize("extra", [10, 15 * 1024 * 1024], ids=["just-over", "16MiB"])
def test_oversized_body_is_413_without_reading_it(server: str, extra: int) -> None:
    # A client that writes its whole body before reading must still get the 413, not a reset.
    big = b'{"name": "' + b"x" * (1024 * 1024 + extra) + b'"}'
    response = httpx.post(
        f"{server}/api/workflows", content=big, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_oversized_chunked_body_is_413(server: str) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 65536  # no Content-Length: counted while streaming

    headers = {"content-type": "application/json"}
    response = httpx.post(f"{server}/graphql", content=chunks(), headers=headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_unknown_route_is_json_404(server: str) -> None:
    response = httpx.get(f"{server}/api/nope")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"


def test_malformed_json_is_validation_error(server: str) -> None:
    with RestApi(server) as rest:
        account: Account = register(rest)
    response = httpx.post(
        f"{server}/api/workflows",
        content=b"{not json",
        headers={"Authorization": f"Bearer {account.token}", "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


@pytest.mark.parametrize(
    "query",
    [
        "{ " + " ".join(f"a{i}: health {{ status }}" for i in range(40)) + " }",
        "{ me { " + "id " * 6000 + "} }",
    ],
    ids=["aliases", "tokens"],
)
def test_graphql_limits_reject_before_running(server: str, query: str) -> None:
    body = httpx.post(f"{server}/graphql", json={"query": query}).json()
    assert body.get("data") is None
    assert body["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"


def test_request_id_is_returned(server: str) -> None:
    response = httpx.get(f"{server}/api/health")
    assert len(response.headers["x-request-id"]) == 32


@pytest.mark.parametrize("param", ["afterSeq=9223372036854775808", "afterSeq=-1", "afterSeq=x"])
def test_stream_rejects_bad_cursors(server: str, param: str) -> None:
    with RestApi(server) as rest:
        account = register(rest)
    response = httpx.get(
        f"{server}/api/runs/00000000-0000-0000-0000-000000000000/stream?{param}",
        headers={"Authorization": f"Bearer {account.token}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
