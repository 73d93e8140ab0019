"""Rate limits: brute force on login, registration per IP, executions per tenant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.e2e.conftest import PASSWORD, SIMPLE_DAG, register
from tests.support.client import ApiError, GraphQLApi, RestApi
from tests.support.live import LiveServer


@pytest.fixture(scope="module")
def limited(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(
        sqlite_url,
        Path(tmp_path_factory.mktemp("limited")),
        treadle_rate_login_per_email="3/minute",
        treadle_rate_login_per_ip="20/minute",
        treadle_rate_register_per_ip="6/minute",
        treadle_rate_execute_per_tenant="3/minute",
    )
    with LiveServer.embedded(settings) as server:
        yield server.base_url


def test_login_brute_force_is_throttled_per_email(limited: str) -> None:
    with RestApi(limited) as rest:
        account = register(rest, "Victim")
        for _ in range(3):
            with pytest.raises(ApiError) as err:
                rest.login(account.email, "wrong password")
            assert err.value.code == "UNAUTHENTICATED"
        response = rest.http.post(
            "/api/auth/login", json={"email": account.email, "password": PASSWORD}
        )
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "RATE_LIMITED"
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def test_graphql_aliases_count_one_by_one(limited: str) -> None:
    with RestApi(limited) as rest:
        account = register(rest, "Aliased")
    logins = " ".join(
        f'a{i}: login(input: {{email: "{account.email}", password: "{PASSWORD}"}}) {{ token }}'
        for i in range(5)
    )
    body = httpx.post(f"{limited}/graphql", json={"query": f"mutation {{ {logins} }}"}).json()
    # Three logins fit in the per-email budget; the fourth alias is refused on its own count.
    assert [error["path"] for error in body["errors"]] == [["a3"]]
    assert body["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert body["errors"][0]["extensions"]["retryAfter"] >= 1


def test_executions_are_limited_per_tenant_only(limited: str) -> None:
    with GraphQLApi(limited) as api:
        noisy, quiet = register(api, "Noisy"), register(api, "Quiet")
        flow = api.create_workflow(noisy.token, name="f", definition=SIMPLE_DAG)["id"]
        other = api.create_workflow(quiet.token, name="f", definition=SIMPLE_DAG)["id"]
        for _ in range(3):
            api.execute(noisy.token, flow, {"n": 1})
        with pytest.raises(ApiError) as err:
            api.execute(noisy.token, flow, {"n": 1})
        assert err.value.code == "RATE_LIMITED"
        assert api.execute(quiet.token, other, {"n": 1})["status"]
        assert api.list_runs(noisy.token, flow)["total"] == 3  # the refused call did nothing
