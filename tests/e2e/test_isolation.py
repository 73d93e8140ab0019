"""Tenant isolation: tenant B against each of tenant A's resources, on every operation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import SIMPLE_DAG, Account
from tests.support.client import Api, ApiError

Probe = Callable[[Api, str, dict[str, str]], Any]

PROBES: dict[str, Probe] = {
    "get-workflow": lambda api, t, ids: api.get_workflow(t, ids["workflow"]),
    "update-workflow": lambda api, t, ids: api.update_workflow(t, ids["workflow"], name="pwned"),
    "delete-workflow": lambda api, t, ids: api.delete_workflow(t, ids["workflow"]),
    "execute-workflow": lambda api, t, ids: api.execute(t, ids["workflow"], {"n": 1}),
    "list-workflow-runs": lambda api, t, ids: api.list_runs(t, ids["workflow"]),
    "get-run": lambda api, t, ids: api.get_run(t, ids["run"]),
    "run-events": lambda api, t, ids: api.events(t, ids["run"]),
    "cancel-run": lambda api, t, ids: api.cancel(t, ids["run"]),
}


@pytest.fixture
def alices_things(api: Api, alice: Account) -> dict[str, str]:
    workflow = api.create_workflow(alice.token, name="Secret", definition=SIMPLE_DAG)
    run = api.execute(alice.token, workflow["id"], {"n": 1})
    return {"workflow": workflow["id"], "run": run["id"]}


@pytest.mark.parametrize("probe", sorted(PROBES))
def test_other_tenant_gets_not_found(
    api: Api, alice: Account, bob: Account, alices_things: dict[str, str], probe: str
) -> None:
    with pytest.raises(ApiError) as err:
        PROBES[probe](api, bob.token, alices_things)
    assert err.value.code == "NOT_FOUND"
    # Nothing changed for the owner.
    workflow = api.get_workflow(alice.token, alices_things["workflow"])
    assert workflow["name"] == "Secret"
    assert workflow["version"] == 1
    assert api.list_runs(alice.token, alices_things["workflow"])["total"] == 1


def test_lists_show_only_own_tenant(
    api: Api, alice: Account, bob: Account, alices_things: dict[str, str]
) -> None:
    assert api.list_workflows(bob.token)["total"] == 0
    assert api.list_workflows(alice.token)["total"] == 1


def test_unknown_and_malformed_ids_are_not_found(api: Api, alice: Account) -> None:
    for bad in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        with pytest.raises(ApiError) as err:
            api.get_workflow(alice.token, bad)
        assert err.value.code == "NOT_FOUND"
        with pytest.raises(ApiError) as err:
            api.get_run(alice.token, bad)
        assert err.value.code == "NOT_FOUND"
