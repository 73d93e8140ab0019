"""Workflow triggers end to end: webhook hooks (signed, no JWT) and the trigger listing, over
REST and GraphQL, embedded and Postgres + a real worker; cron firing in embedded mode (the
many-worker case is tests/integration/test_cron_workers.py)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import PASSWORD, Account
from tests.e2e.test_runs import wait_run
from tests.support.client import Api, ApiError, GraphQLApi, RestApi, unique_email
from treadle.engine.steps.webhook import sign

TRIGGER = "id workflowId key type path schedule timezone nextFireAt lastFiredAt secret"


def hooked(triggers: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "echo", "type": "TRANSFORM", "config": {"output": {"got": "{{ input }}"}}}
        ],
        "edges": [],
        "triggers": triggers,
    }


def list_triggers(api: Api, token: str, workflow_id: str) -> list[dict[str, Any]]:
    if isinstance(api, RestApi):
        return list(api.call("GET", f"/api/workflows/{workflow_id}/triggers", token)["items"])
    assert isinstance(api, GraphQLApi)
    q = f"query($w: ID!) {{ workflowTriggers(workflowId: $w) {{ {TRIGGER} }} }}"
    return list(api.gql(q, token, w=workflow_id)["workflowTriggers"])


def post_hook(
    http: httpx.Client, trigger_id: str, secret: str, body: Any, at: int | None = None
) -> httpx.Response:
    raw = json.dumps(body).encode()
    signature = sign(secret, raw, int(time.time()) if at is None else at)
    headers = {"X-Treadle-Signature": signature, "content-type": "application/json"}
    return http.post(f"/api/hooks/{trigger_id}", content=raw, headers=headers)


def webhook_workflow(api: Api, account: Account) -> tuple[str, dict[str, Any]]:
    workflow = api.create_workflow(
        account.token, name="Hooked", definition=hooked([{"type": "webhook"}])
    )
    (trigger,) = list_triggers(api, account.token, workflow["id"])
    return str(workflow["id"]), trigger


def run_count(api: Api, token: str, workflow_id: str) -> int:
    return int(api.list_runs(token, workflow_id)["total"])


def test_a_signed_hook_starts_a_run_with_its_body_as_input(api: Api, alice: Account) -> None:
    workflow_id, trigger = webhook_workflow(api, alice)
    assert trigger["type"] == "webhook"
    assert trigger["key"] == "webhook1"
    assert trigger["path"] == f"/api/hooks/{trigger['id']}"
    assert len(trigger["secret"]) == 64  # shown to the ADMIN who owns it
    stored = api.get_workflow(alice.token, workflow_id)["definition"]["triggers"]
    assert stored == [{"id": "webhook1", "type": "webhook"}]

    body = {"order": 42, "items": ["a", "b"]}
    response = post_hook(api.http, trigger["id"], trigger["secret"], body)
    assert response.status_code == 202, response.text
    run = wait_run(api, alice.token, response.json()["id"])
    assert run["status"] == "COMPLETED", run
    assert run["input"] == body
    assert run["output"] == {"echo": {"got": body}}

    again = api.http.post(
        f"/api/hooks/{trigger['id']}",
        content=response.request.content,
        headers=dict(response.request.headers),
    )
    assert again.status_code == 200  # the same signed request: the same run, nothing new
    assert again.json()["id"] == run["id"]
    assert run_count(api, alice.token, workflow_id) == 1


def test_bad_hooks_are_refused_and_start_nothing(api: Api, alice: Account, bob: Account) -> None:
    workflow_id, trigger = webhook_workflow(api, alice)
    _, bobs = webhook_workflow(api, bob)
    hook, secret, now = trigger["id"], trigger["secret"], int(time.time())
    refused = {
        "wrong secret": post_hook(api.http, hook, "0" * 64, {"a": 1}),
        "bob's secret": post_hook(api.http, hook, bobs["secret"], {"a": 1}),
        "too old": post_hook(api.http, hook, secret, {"a": 1}, at=now - 301),
        "from the future": post_hook(api.http, hook, secret, {"a": 1}, at=now + 360),
        "unsigned": api.http.post(f"/api/hooks/{hook}", json={"a": 1}),
        "garbled": api.http.post(
            f"/api/hooks/{hook}", json={"a": 1}, headers={"X-Treadle-Signature": "t=x,v1=y"}
        ),
    }
    for reason, response in refused.items():
        assert response.status_code == 401, (reason, response.text)
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"
    unknown = {
        "unknown id": post_hook(api.http, str(uuid.uuid4()), secret, {"a": 1}),
        "not an id": post_hook(api.http, "nope", secret, {"a": 1}),
    }
    for reason, response in unknown.items():
        assert response.status_code == 404, (reason, response.text)
        assert response.json()["error"]["code"] == "NOT_FOUND"
    not_object = post_hook(api.http, hook, secret, [1, 2])
    assert not_object.status_code == 400
    assert run_count(api, alice.token, workflow_id) == 0
    # Another tenant cannot see the triggers (nor their secrets).
    with pytest.raises(ApiError) as caught:
        list_triggers(api, bob.token, workflow_id)
    assert caught.value.code == "NOT_FOUND"


def test_a_deleted_workflow_or_removed_trigger_hook_is_not_found(api: Api, alice: Account) -> None:
    workflow_id, trigger = webhook_workflow(api, alice)
    api.update_workflow(alice.token, workflow_id, definition=hooked([]))
    gone = post_hook(api.http, trigger["id"], trigger["secret"], {"a": 1})
    assert gone.status_code == 404
    assert list_triggers(api, alice.token, workflow_id) == []

    other_id, other = webhook_workflow(api, alice)
    api.delete_workflow(alice.token, other_id)
    assert post_hook(api.http, other["id"], other["secret"], {"a": 1}).status_code == 404


def test_triggers_keep_their_id_and_secret_across_updates_and_members_see_no_secret(
    api: Api, alice: Account
) -> None:
    workflow_id, trigger = webhook_workflow(api, alice)
    shown = api.get_workflow(alice.token, workflow_id)["definition"]
    shown["nodes"][0]["config"] = {"output": {"v": 2}}
    api.update_workflow(alice.token, workflow_id, definition=shown)
    (kept,) = list_triggers(api, alice.token, workflow_id)
    assert (kept["id"], kept["secret"]) == (trigger["id"], trigger["secret"])

    email = unique_email("member")
    api.create_user(alice.token, email=email, password=PASSWORD, name="M", role="MEMBER")
    member = api.login(email, PASSWORD)["token"]
    (seen,) = list_triggers(api, member, workflow_id)
    assert seen["id"] == trigger["id"]
    assert seen["secret"] is None


def test_invalid_triggers_are_validation_errors(api: Api, alice: Account) -> None:
    for triggers in (
        [{"type": "cron", "schedule": "every day"}],
        [{"type": "cron", "schedule": "* * * * *", "timezone": "Mars/Olympus"}],
        [{"type": "carrier-pigeon"}],
        [{"type": "webhook", "id": "x"}, {"type": "webhook", "id": "x"}],
    ):
        with pytest.raises(ApiError) as caught:
            api.create_workflow(alice.token, name="Bad", definition=hooked(triggers))
        assert caught.value.code == "VALIDATION_ERROR", triggers


def test_cron_fires_each_second_and_never_after_delete(sqlite_server: str) -> None:
    with RestApi(sqlite_server) as api:
        body = api.register("Cron", unique_email("cron"), PASSWORD, "Cron Admin")
        token = body["token"]
        cron = {"type": "cron", "schedule": "* * * * * *", "input": {"from": "cron"}}
        workflow = api.create_workflow(token, name="Tick", definition=hooked([cron]))
        (trigger,) = list_triggers(api, token, workflow["id"])
        assert trigger["schedule"] == "* * * * * *"
        assert trigger["timezone"] == "UTC"
        assert trigger["secret"] is None
        deadline = time.monotonic() + 30
        while run_count(api, token, workflow["id"]) < 3:
            assert time.monotonic() < deadline, "the cron trigger did not fire"
            time.sleep(0.2)
        api.delete_workflow(token, workflow["id"])
        deleted = run_count(api, token, workflow["id"])
        time.sleep(2.5)
        assert run_count(api, token, workflow["id"]) == deleted
        runs = api.list_runs(token, workflow["id"])["items"]
        assert all(run["input"] == {"from": "cron"} for run in runs)
