"""APPROVAL steps end to end: REST and GraphQL, embedded and Postgres + a real worker.

A waiting approval holds no worker slot; a person resolves it (approvers by role or email),
or its timeout does; the output ``{approved, by, comment, data}`` drives a CONDITION.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import PASSWORD, Account
from tests.e2e.test_runs import assert_gap_free, steps_by_node, wait_run
from tests.support.client import RUN, STEP, Api, ApiError, GraphQLApi, RestApi, unique_email


def resolve(
    api: Api,
    token: str,
    run_id: str,
    node: str,
    approved: bool,
    comment: str | None = None,
    data: Any = None,
) -> Any:
    """``POST /api/runs/:id/steps/:nodeId/approve`` or the ``resolveApproval`` mutation."""
    if isinstance(api, RestApi):
        body: dict[str, Any] = {"approved": approved}
        if comment is not None:
            body["comment"] = comment
        if data is not None:
            body["data"] = data
        return api.call("POST", f"/api/runs/{run_id}/steps/{node}/approve", token, json=body)
    assert isinstance(api, GraphQLApi)
    q = (
        "mutation($r: ID!, $n: ID!, $a: Boolean!, $c: String, $d: JSON) "
        "{ resolveApproval(runId: $r, nodeId: $n, approved: $a, comment: $c, data: $d) "
        f"{{ {RUN} steps {{ {STEP} }} }} }}"
    )
    variables = {"r": run_id, "n": node, "a": approved, "c": comment, "d": data}
    return api.gql(q, token, **variables)["resolveApproval"]


def approval_flow(config: dict[str, Any]) -> dict[str, Any]:
    """approve (APPROVAL) -> ok (CONDITION on its output) -> yes | no."""
    return {
        "nodes": [
            {"id": "approve", "type": "APPROVAL", "config": config},
            {
                "id": "ok",
                "type": "CONDITION",
                "config": {"expression": "steps.approve.output.approved"},
            },
            {
                "id": "yes",
                "type": "TRANSFORM",
                "config": {"output": {"by": "{{ steps.approve.output.by }}"}},
            },
            {"id": "no", "type": "TRANSFORM", "config": {"output": "rejected"}},
        ],
        "edges": [
            {"from": "approve", "to": "ok"},
            {"from": "ok", "to": "yes", "when": True},
            {"from": "ok", "to": "no", "when": False},
        ],
    }


def start(api: Api, account: Account, config: dict[str, Any], input_: Any = None) -> str:
    workflow = api.create_workflow(account.token, name="Approve", definition=approval_flow(config))
    run = api.execute(account.token, workflow["id"], input_ or {"amount": 120})
    return str(run["id"])


def wait_waiting(api: Api, token: str, run_id: str, timeout: float = 30) -> dict[str, Any]:
    """The run's STEP_WAITING event, once the approval waits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = api.events(token, run_id)
        waiting = [e for e in events if e["type"] == "STEP_WAITING"]
        if waiting:
            return dict(waiting[0])
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never waited: {api.events(token, run_id)}")


def member(api: Api, admin: Account, email: str | None = None) -> Account:
    """A MEMBER of ``admin``'s tenant, logged in."""
    email = email or unique_email("member")
    api.create_user(admin.token, email=email, password=PASSWORD, name="Mem", role="MEMBER")
    body = api.login(email, PASSWORD)
    return Account(body["token"], body["user"], body["tenant"], email)


@pytest.mark.parametrize(
    ("approved", "taken", "skipped"), [(True, "yes", "no"), (False, "no", "yes")]
)
def test_a_decision_resolves_the_step_and_the_condition_branches_on_it(
    api: Api, alice: Account, approved: bool, taken: str, skipped: str
) -> None:
    run_id = start(api, alice, {"prompt": "Refund {{ input.amount }} EUR?"})
    waiting = wait_waiting(api, alice.token, run_id)
    assert waiting["nodeId"] == "approve"
    assert waiting["data"]["prompt"] == "Refund 120 EUR?"
    assert waiting["data"]["expiresAt"] is None
    pending = steps_by_node(api.get_run(alice.token, run_id))["approve"]
    assert pending["status"] == "RUNNING"
    assert pending["output"] is None

    after = resolve(api, alice.token, run_id, "approve", approved, "looks fine", {"ticket": 7})
    assert steps_by_node(after)["approve"]["status"] == "COMPLETED"
    run = wait_run(api, alice.token, run_id)
    assert run["status"] == "COMPLETED", run
    steps = steps_by_node(run)
    output = steps["approve"]["output"]
    assert output["approved"] is approved
    assert output["comment"] == "looks fine"
    assert output["data"] == {"ticket": 7}
    assert output["by"]["email"] == alice.email
    assert output["by"]["id"] == alice.user["id"]
    assert output["timedOut"] is False
    assert steps[taken]["status"] == "COMPLETED"
    assert steps[skipped]["status"] == "SKIPPED"
    events = api.events(alice.token, run_id)
    assert_gap_free(events)
    types = [e["type"] for e in events if e["nodeId"] == "approve"]
    assert types == ["STEP_STARTED", "STEP_WAITING", "STEP_COMPLETED"]


def test_resolving_what_is_not_waiting_is_a_conflict(api: Api, alice: Account) -> None:
    run_id = start(api, alice, {"prompt": "ok?"})
    wait_waiting(api, alice.token, run_id)
    with pytest.raises(ApiError) as not_approval:
        resolve(api, alice.token, run_id, "ok", True)
    assert not_approval.value.code == "CONFLICT"
    with pytest.raises(ApiError) as no_node:
        resolve(api, alice.token, run_id, "nope", True)
    assert no_node.value.code == "NOT_FOUND"
    resolve(api, alice.token, run_id, "approve", True)
    with pytest.raises(ApiError) as twice:
        resolve(api, alice.token, run_id, "approve", False)
    assert twice.value.code == "CONFLICT"
    if isinstance(api, RestApi):
        assert twice.value.status == 409
    assert wait_run(api, alice.token, run_id)["status"] == "COMPLETED"


def test_a_cancelled_run_cannot_be_approved(api: Api, alice: Account) -> None:
    run_id = start(api, alice, {"prompt": "ok?"})
    wait_waiting(api, alice.token, run_id)
    api.cancel(alice.token, run_id)
    with pytest.raises(ApiError) as caught:
        resolve(api, alice.token, run_id, "approve", True)
    assert caught.value.code == "CONFLICT"


def test_another_tenant_gets_not_found_and_changes_nothing(
    api: Api, alice: Account, bob: Account
) -> None:
    run_id = start(api, alice, {"prompt": "ok?"})
    wait_waiting(api, alice.token, run_id)
    with pytest.raises(ApiError) as caught:
        resolve(api, bob.token, run_id, "approve", True)
    assert caught.value.code == "NOT_FOUND"
    if isinstance(api, RestApi):
        assert caught.value.status == 404
    assert steps_by_node(api.get_run(alice.token, run_id))["approve"]["status"] == "RUNNING"
    api.cancel(alice.token, run_id)


def test_approvers_by_role(api: Api, alice: Account) -> None:
    run_id = start(api, alice, {"prompt": "ok?", "approvers": "ADMIN"})
    wait_waiting(api, alice.token, run_id)
    mem = member(api, alice)
    with pytest.raises(ApiError) as caught:
        resolve(api, mem.token, run_id, "approve", True)
    assert caught.value.code == "FORBIDDEN"
    if isinstance(api, RestApi):
        assert caught.value.status == 403
    resolve(api, alice.token, run_id, "approve", True)  # alice registered: an ADMIN
    assert wait_run(api, alice.token, run_id)["status"] == "COMPLETED"


def test_any_user_of_the_tenant_by_default_and_approvers_by_email(api: Api, alice: Account) -> None:
    anyone = start(api, alice, {"prompt": "ok?"})
    wait_waiting(api, alice.token, anyone)
    mem = member(api, alice)
    resolve(api, mem.token, anyone, "approve", False)
    assert steps_by_node(wait_run(api, alice.token, anyone))["no"]["status"] == "COMPLETED"

    listed = member(api, alice)
    by_email = start(api, alice, {"prompt": "ok?", "approvers": [listed.email.upper()]})
    wait_waiting(api, alice.token, by_email)
    for outsider in (alice, mem):  # an ADMIN not listed may not either
        with pytest.raises(ApiError) as caught:
            resolve(api, outsider.token, by_email, "approve", True)
        assert caught.value.code == "FORBIDDEN"
    done = resolve(api, listed.token, by_email, "approve", True)
    assert steps_by_node(done)["approve"]["output"]["by"]["email"] == listed.email


@pytest.mark.parametrize(("on_timeout", "taken"), [("approve", "yes"), ("reject", "no")])
def test_the_timeout_resolves_per_on_timeout(
    api: Api, alice: Account, on_timeout: str, taken: str
) -> None:
    config = {"prompt": "ok?", "timeoutSeconds": 1, "onTimeout": on_timeout}
    run_id = start(api, alice, config)
    waiting = wait_waiting(api, alice.token, run_id)
    assert waiting["data"]["expiresAt"] is not None
    run = wait_run(api, alice.token, run_id)
    assert run["status"] == "COMPLETED", run
    steps = steps_by_node(run)
    output = steps["approve"]["output"]
    assert output == {
        "approved": on_timeout == "approve",
        "by": None,
        "comment": None,
        "data": None,
        "timedOut": True,
    }
    assert steps[taken]["status"] == "COMPLETED"
    with pytest.raises(ApiError) as late:
        resolve(api, alice.token, run_id, "approve", True)
    assert late.value.code == "CONFLICT"


def test_bad_bodies_and_configs_are_validation_errors(api: Api, alice: Account) -> None:
    with pytest.raises(ApiError) as bad_config:
        api.create_workflow(
            alice.token,
            name="Bad",
            definition={
                "nodes": [
                    {
                        "id": "a",
                        "type": "APPROVAL",
                        "config": {"prompt": "x", "approvers": "OWNER", "onTimeout": "maybe"},
                    }
                ]
            },
        )
    assert bad_config.value.code == "VALIDATION_ERROR"
    if isinstance(api, RestApi):
        run_id = start(api, alice, {"prompt": "ok?"})
        wait_waiting(api, alice.token, run_id)
        with pytest.raises(ApiError) as bad_body:
            api.call("POST", f"/api/runs/{run_id}/steps/approve/approve", alice.token, json={})
        assert bad_body.value.status == 400
        api.cancel(alice.token, run_id)
