"""E2E fixtures: an ``api`` client per protocol, and registered tenants."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.client import Api, GraphQLApi, RestApi, unique_email

PASSWORD = "correct horse battery"


@pytest.fixture(params=["rest", "graphql"])
def api(request: pytest.FixtureRequest, server: str) -> Iterator[Api]:
    """The same test body over the REST aliases and over GraphQL."""
    client = RestApi(server) if request.param == "rest" else GraphQLApi(server)
    yield client
    client.http.close()


@dataclass
class Account:
    token: str
    user: dict[str, Any]
    tenant: dict[str, Any]
    email: str


def register(api: Api, tenant: str = "Acme") -> Account:
    email = unique_email(tenant.lower())
    body = api.register(tenant, email, PASSWORD, f"{tenant} Admin")
    return Account(body["token"], body["user"], body["tenant"], email)


@pytest.fixture
def alice(api: Api) -> Account:
    return register(api, "Alice")


@pytest.fixture
def bob(api: Api) -> Account:
    return register(api, "Bob")


SIMPLE_DAG: dict[str, Any] = {
    "nodes": [
        {"id": "shape", "type": "TRANSFORM", "config": {"output": {"n": "{{ input.n * 2 }}"}}},
        {"id": "check", "type": "CONDITION", "config": {"expression": "steps.shape.output.n > 5"}},
        {"id": "big", "type": "TRANSFORM", "config": {"output": {"size": "big"}}},
        {"id": "small", "type": "TRANSFORM", "config": {"output": {"size": "small"}}},
        {
            "id": "join",
            "type": "TRANSFORM",
            "config": {"output": {"n": "{{ steps.shape.output.n }}"}},
        },
    ],
    "edges": [
        {"from": "shape", "to": "check"},
        {"from": "check", "to": "big", "when": True},
        {"from": "check", "to": "small", "when": False},
        {"from": "big", "to": "join"},
        {"from": "small", "to": "join"},
    ],
}
