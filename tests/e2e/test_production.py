"""Production mode: no introspection, no field suggestions, no batching, masked internals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.support.live import LiveServer


@pytest.fixture(scope="module")
def production(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(
        sqlite_url, Path(tmp_path_factory.mktemp("prod")), treadle_env="production"
    )
    with LiveServer.embedded(settings) as server:
        yield server.base_url


@pytest.fixture(scope="module")
def development(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(sqlite_url, Path(tmp_path_factory.mktemp("dev")))
    with LiveServer.embedded(settings) as server:
        yield server.base_url


def _errors(base_url: str, query: str) -> list[dict[str, object]]:
    body = httpx.post(f"{base_url}/graphql", json={"query": query}).json()
    errors: list[dict[str, object]] = body["errors"]
    return errors


def test_introspection_is_off_in_production_only(production: str, development: str) -> None:
    query = "{ __schema { types { name } } }"
    assert _errors(production, query)[0]["extensions"] == {"code": "VALIDATION_ERROR"}
    body = httpx.post(f"{development}/graphql", json={"query": query}).json()
    assert body["data"]["__schema"]["types"]


def test_field_suggestions_are_hidden_in_production(production: str, development: str) -> None:
    query = "{ helth { status } }"
    assert "Did you mean" in str(_errors(development, query)[0]["message"])
    message = str(_errors(production, query)[0]["message"])
    assert "helth" in message
    assert "Did you mean" not in message
    assert "health" not in message.replace("helth", "")


def test_batched_operations_are_refused(production: str) -> None:
    batch = [{"query": "{ health { status } }"}] * 3
    response = httpx.post(f"{production}/graphql", json=batch)
    assert response.status_code == 400


def test_no_graphiql_in_production(production: str, development: str) -> None:
    html = {"accept": "text/html"}
    assert httpx.get(f"{development}/graphql", headers=html).status_code == 200
    assert httpx.get(f"{production}/graphql", headers=html).status_code != 200
