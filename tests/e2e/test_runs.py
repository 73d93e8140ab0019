"""Runs end to end: branches, joins, retries, failures, cancellation, idempotency, events."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import SIMPLE_DAG, Account, register
from tests.fakes import serve_app
from tests.fakes.sink import Sink
from tests.support.client import Api, ApiError, GraphQLApi

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def wait_run(api: Api, token: str, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = api.get_run(token, run_id)
        if run["status"] in TERMINAL or time.monotonic() > deadline:
            return dict(run)
        time.sleep(0.05)


def wait_step(
    api: Api, token: str, run_id: str, node: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get_run(token, run_id)
        step = next(s for s in run["steps"] if s["nodeId"] == node)
        if step["status"] == status:
            return dict(step)
        time.sleep(0.05)
    raise AssertionError(f"step {node} never reached {status}")


def steps_by_node(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["nodeId"]: s for s in run["steps"]}


def assert_gap_free(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "RUN_CREATED"


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[Sink, str]]:
    recorder = Sink()
    with serve_app(recorder.app) as url:
        yield recorder, url


def _flow(api: Api, account: Account, nodes: list[dict[str, Any]], edges: list[Any]) -> str:
    body = api.create_workflow(
        account.token, name="Flow", definition={"nodes": nodes, "edges": edges}
    )
    return str(body["id"])


@pytest.mark.parametrize(("n", "taken", "skipped"), [(5, "big", "small"), (1, "small", "big")])
def test_branch_join_and_skip(api: Api, alice: Account, n: int, taken: str, skipped: str) -> None:
    workflow = api.create_workflow(alice.token, name="Branchy", definition=SIMPLE_DAG)
    started = api.execute(alice.token, workflow["id"], {"n": n})
    assert started["status"] in {"PENDING", "RUNNING", "COMPLETED"}
    assert started["workflowVersion"] == 1
    run = wait_run(api, alice.token, started["id"])
    assert run["status"] == "COMPLETED", run
    steps = steps_by_node(run)
    assert steps[taken]["status"] == "COMPLETED"
    assert steps[skipped]["status"] == "SKIPPED"
    assert steps["join"]["status"] == "COMPLETED"
    assert steps["join"]["attempt"] == 1
    assert steps["check"]["output"] == {"result": n * 2 > 5}
    assert run["output"] == {"join": {"n": n * 2}}
    events = api.events(alice.token, run["id"])
    assert_gap_free(events)
    assert events[-1]["type"] == "RUN_COMPLETED"
    assert [e["nodeId"] for e in events if e["type"] == "STEP_SKIPPED"] == [skipped]
    assert [e["seq"] for e in api.events(alice.token, run["id"], after_seq=3, limit=2)] == [4, 5]


def test_idempotency_key_returns_the_same_run(api: Api, alice: Account) -> None:
    workflow = api.create_workflow(alice.token, name="Once", definition=SIMPLE_DAG)
    statuses: list[int] = []

    def execute(key: str) -> Any:
        run = api.execute(alice.token, workflow["id"], {"n": 1}, key=key)
        statuses.append(getattr(api, "last_status", 0))  # GraphQL has no status to tell them by
        return run

    first, second, other = execute("order-42"), execute("order-42"), execute("order-43")
    assert first["id"] == second["id"] != other["id"]
    assert second["createdAt"] == first["createdAt"]
    if api.kind == "rest":
        assert statuses == [202, 200, 202]  # created, the same run again, created
    assert api.list_runs(alice.token, workflow["id"])["total"] == 2


def test_run_pins_its_version(api: Api, alice: Account) -> None:
    nodes = [
        {"id": "wait", "type": "DELAY", "config": {"seconds": 1}},
        {"id": "out", "type": "TRANSFORM", "config": {"output": {"v": 1}}},
    ]
    workflow_id = _flow(api, alice, nodes, [{"from": "wait", "to": "out"}])
    run = api.execute(alice.token, workflow_id)
    nodes[1]["config"]["output"] = {"v": 2}
    api.update_workflow(
        alice.token,
        workflow_id,
        definition={"nodes": nodes, "edges": [{"from": "wait", "to": "out"}]},
    )
    done = wait_run(api, alice.token, run["id"])
    assert done["status"] == "COMPLETED"
    assert done["workflowVersion"] == 1
    assert done["output"] == {"out": {"v": 1}}


def test_http_retry_then_success_with_idempotency_keys(
    api: Api, alice: Account, sink: tuple[Sink, str]
) -> None:
    recorder, url = sink
    path = f"/retry-{api.kind}-{time.monotonic_ns()}"
    recorder.script(path, 503, 200)
    nodes = [
        {
            "id": "call",
            "type": "HTTP_REQUEST",
            "config": {"method": "POST", "url": f"{url}{path}", "body": {"x": "{{ input.x }}"}},
            "retry": {"maxAttempts": 3, "backoffSeconds": 0.2},
        }
    ]
    run = api.execute(alice.token, _flow(api, alice, nodes, []), {"x": 7})
    done = wait_run(api, alice.token, run["id"])
    assert done["status"] == "COMPLETED", done
    step = steps_by_node(done)["call"]
    assert step["attempt"] == 2
    assert step["output"]["status"] == 200
    seen = [r for r in recorder.requests if r.path == path]
    assert [r.headers["idempotency-key"] for r in seen] == [
        f"{run['id']}:call:1",
        f"{run['id']}:call:2",
    ]
    assert seen[0].body == b'{"x":7}' or seen[0].body.replace(b" ", b"") == b'{"x":7}'
    types = [e["type"] for e in api.events(alice.token, run["id"])]
    assert types.count("STEP_RETRYING") == 1
    assert types.count("STEP_STARTED") == 2


def test_permanent_failure_fails_the_run_and_cancels_the_rest(
    api: Api, alice: Account, sink: tuple[Sink, str]
) -> None:
    recorder, url = sink
    path = f"/gone-{api.kind}-{time.monotonic_ns()}"
    recorder.script(path, 404)
    nodes = [
        {"id": "call", "type": "HTTP_REQUEST", "config": {"url": f"{url}{path}"}},
        {"id": "after", "type": "TRANSFORM", "config": {"output": {}}},
    ]
    run = api.execute(alice.token, _flow(api, alice, nodes, [{"from": "call", "to": "after"}]))
    done = wait_run(api, alice.token, run["id"])
    assert done["status"] == "FAILED"
    steps = steps_by_node(done)
    assert steps["call"]["status"] == "FAILED"
    assert steps["call"]["attempt"] == 1
    assert steps["after"]["status"] == "CANCELLED"
    assert done["error"]["nodeId"] == "call"
    assert_gap_free(api.events(alice.token, run["id"]))


def test_egress_to_a_loopback_address_not_allowed_is_denied(api: Api, alice: Account) -> None:
    # 127.0.0.2 is loopback (never leaves the machine) but not in the test allow-list.
    nodes = [{"id": "call", "type": "HTTP_REQUEST", "config": {"url": "http://127.0.0.2:9/x"}}]
    done = wait_run(api, alice.token, api.execute(alice.token, _flow(api, alice, nodes, []))["id"])
    step = steps_by_node(done)["call"]
    assert done["status"] == "FAILED"
    assert step["error"]["code"] == "EGRESS_DENIED"
    assert step["attempt"] == 1


def test_webhook_is_signed(api: Api, alice: Account, sink: tuple[Sink, str]) -> None:
    recorder, url = sink
    path = f"/hook-{api.kind}-{time.monotonic_ns()}"
    nodes = [
        {"id": "hook", "type": "WEBHOOK", "config": {"url": f"{url}{path}", "secret": "s3cret"}}
    ]
    done = wait_run(
        api, alice.token, api.execute(alice.token, _flow(api, alice, nodes, []), {"a": 1})["id"]
    )
    assert done["status"] == "COMPLETED"
    request = next(r for r in recorder.requests if r.path == path)
    stamp, signature = (
        part.split("=", 1)[1] for part in request.headers["x-treadle-signature"].split(",")
    )
    expected = hmac.new(b"s3cret", f"{stamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(signature, expected)
    assert "s3cret" not in str(done)


def test_ai_completion_mock(api: Api, alice: Account) -> None:
    nodes = [
        {"id": "ai", "type": "AI_COMPLETION", "config": {"prompt": "Say hi to {{ input.who }}"}}
    ]
    done = wait_run(
        api,
        alice.token,
        api.execute(alice.token, _flow(api, alice, nodes, []), {"who": "Ann"})["id"],
    )
    output = steps_by_node(done)["ai"]["output"]
    assert done["status"] == "COMPLETED"
    assert output["mock"] is True
    assert output["text"]
    assert (
        output["usage"]["totalTokens"]
        == output["usage"]["promptTokens"] + output["usage"]["completionTokens"]
    )


def test_cancel_during_a_delay(api: Api, alice: Account) -> None:
    nodes = [
        {"id": "wait", "type": "DELAY", "config": {"seconds": 60}},
        {"id": "after", "type": "TRANSFORM", "config": {"output": {}}},
    ]
    run = api.execute(alice.token, _flow(api, alice, nodes, [{"from": "wait", "to": "after"}]))
    wait_step(api, alice.token, run["id"], "wait", "RUNNING")
    cancelled = api.cancel(alice.token, run["id"])
    assert cancelled["status"] == "CANCELLED"
    assert {s["status"] for s in cancelled["steps"]} == {"CANCELLED"}
    with pytest.raises(ApiError) as err:
        api.cancel(alice.token, run["id"])
    assert err.value.code == "CONFLICT"
    events = api.events(alice.token, run["id"])
    assert_gap_free(events)
    assert events[-1]["type"] == "RUN_CANCELLED"
    assert [e["type"] for e in events].count("RUN_CANCELLED") == 1


def test_cancel_during_a_retry_wait(api: Api, alice: Account, sink: tuple[Sink, str]) -> None:
    recorder, url = sink
    path = f"/down-{api.kind}-{time.monotonic_ns()}"
    recorder.script(path, 503, 503, 503)
    nodes = [
        {
            "id": "call",
            "type": "HTTP_REQUEST",
            "config": {"url": f"{url}{path}"},
            "retry": {"maxAttempts": 3, "backoffSeconds": 2},
        }
    ]
    run = api.execute(alice.token, _flow(api, alice, nodes, []))
    wait_step(api, alice.token, run["id"], "call", "RETRYING")
    assert api.cancel(alice.token, run["id"])["status"] == "CANCELLED"
    events = api.events(alice.token, run["id"])
    retry_at = datetime.fromisoformat(
        next(e for e in events if e["type"] == "STEP_RETRYING")["data"]["retryAt"]
    )
    cancelled_at = datetime.fromisoformat(events[-1]["createdAt"])
    assert events[-1]["type"] == "RUN_CANCELLED"
    assert cancelled_at < retry_at, "the cancel came after the retry was due: nothing to show"
    # Wait until well after the retry was due: a retry that survived the cancel has run by then.
    time.sleep(max(0.0, (retry_at - datetime.now(UTC)).total_seconds()) + 3)
    assert len([r for r in recorder.requests if r.path == path]) == 1
    assert steps_by_node(api.get_run(alice.token, run["id"]))["call"]["status"] == "CANCELLED"
    after = [e["type"] for e in api.events(alice.token, run["id"])]
    assert after.count("STEP_STARTED") == 1
    assert after[-1] == "RUN_CANCELLED"


def test_graphql_run_lists_carry_their_steps(server: str) -> None:
    with GraphQLApi(server) as gql:
        alice = register(gql, "Lister")
        nodes = [{"id": "one", "type": "TRANSFORM", "config": {"output": {"n": "{{ input.n }}"}}}]
        workflow_id = _flow(gql, alice, nodes, [])
        ids = [gql.execute(alice.token, workflow_id, {"n": n})["id"] for n in range(3)]
        for run_id in ids:
            wait_run(gql, alice.token, run_id)
        query = "query($w: ID) { runs(workflowId: $w) { items { id steps { nodeId output } } } }"
        items = gql.gql(query, alice.token, w=workflow_id)["runs"]["items"]
    outputs = {item["id"]: item["steps"] for item in items}
    assert set(outputs) == set(ids)
    for n, run_id in enumerate(ids):
        assert outputs[run_id] == [{"nodeId": "one", "output": {"n": n}}]
