"""Rerun from a failed step, end to end: REST and GraphQL, embedded and Postgres + worker.

The rerun resumes the same run in place: completed steps keep their outputs (their side
effects are not repeated: counted at the sink), the rest runs again, and the history keeps
both attempts in one gap-free ``seq``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import PASSWORD, Account
from tests.e2e.test_runs import assert_gap_free, steps_by_node, wait_run, wait_step
from tests.fakes import serve_app
from tests.fakes.sink import Sink
from tests.support.client import RUN, STEP, Api, ApiError, GraphQLApi, RestApi, unique_email
from tests.support.ws import follow_run


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[Sink, str]]:
    recorder = Sink()
    with serve_app(recorder.app) as url:
        yield recorder, url


def rerun(
    api: Api,
    token: str,
    run_id: str,
    from_node: str | None = None,
    input_: dict[str, Any] | None = None,
    key: str | None = None,
) -> Any:
    """``POST /api/runs/:id/rerun`` or the ``rerunRun`` mutation."""
    if isinstance(api, RestApi):
        body: dict[str, Any] = {}
        if from_node is not None:
            body["fromNodeId"] = from_node
        if input_ is not None:
            body["input"] = input_
        headers = {"Idempotency-Key": key} if key else None
        return api.call("POST", f"/api/runs/{run_id}/rerun", token, json=body, headers=headers)
    assert isinstance(api, GraphQLApi)
    q = (
        "mutation($id: ID!, $f: ID, $in: JSON, $k: String) "
        "{ rerunRun(id: $id, fromNodeId: $f, input: $in, idempotencyKey: $k) "
        f"{{ {RUN} steps {{ {STEP} }} }} }}"
    )
    variables = {"id": run_id, "f": from_node, "in": input_, "k": key}
    return api.gql(q, token, **variables)["rerunRun"]


def _chain(api: Api, account: Account, url: str, prefix: str) -> str:
    """a -> b -> c, each an HTTP POST to the sink at ``prefix/<node>``."""
    nodes = [
        {
            "id": node,
            "type": "HTTP_REQUEST",
            "config": {
                "method": "POST",
                "url": f"{url}{prefix}/{node}",
                "body": {"n": "{{ input.n }}"},
            },
        }
        for node in ("a", "b", "c")
    ]
    edges = [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]
    body = api.create_workflow(
        account.token, name="Chain", definition={"nodes": nodes, "edges": edges}
    )
    return str(body["id"])


def _calls(recorder: Sink, path: str) -> list[str]:
    return [r.headers["idempotency-key"] for r in list(recorder.requests) if r.path == path]


def _failed_chain(api: Api, account: Account, sink: tuple[Sink, str]) -> tuple[dict[str, Any], str]:
    """A finished run of the chain whose ``b`` failed for good (the sink answered 400)."""
    recorder, url = sink
    prefix = f"/rerun-{api.kind}-{uuid.uuid4().hex[:8]}"
    recorder.script(f"{prefix}/b", 400)  # once: the next call is answered 200
    run = api.execute(account.token, _chain(api, account, url, prefix), {"n": 1})
    done = wait_run(api, account.token, run["id"])
    assert done["status"] == "FAILED", done
    return done, prefix


def test_rerun_keeps_completed_outputs_and_reruns_only_the_rest(
    api: Api, alice: Account, sink: tuple[Sink, str]
) -> None:
    recorder, _ = sink
    failed, prefix = _failed_chain(api, alice, sink)
    run_id = failed["id"]
    first = steps_by_node(failed)
    assert [first[n]["status"] for n in "abc"] == ["COMPLETED", "FAILED", "CANCELLED"]
    history = api.events(alice.token, run_id)

    resumed = rerun(api, alice.token, run_id, from_node="b", input_={"n": 2})
    assert resumed["id"] == run_id
    assert resumed["status"] == "RUNNING"
    if api.kind == "rest":
        assert api.last_status == 202  # type: ignore[union-attr]
    done = wait_run(api, alice.token, run_id)
    assert done["status"] == "COMPLETED", done
    assert done["input"] == {"n": 2}
    steps = steps_by_node(done)
    assert steps["a"]["output"] == first["a"]["output"]  # kept, not run again
    assert steps["a"]["attempt"] == 1
    assert steps["b"]["attempt"] == 2  # the failed attempt is not reused
    assert done["output"] == {"c": steps["c"]["output"]}
    # Side effects: a once (first attempt only), b twice, c once (second attempt only).
    assert _calls(recorder, f"{prefix}/a") == [f"{run_id}:a:1"]
    assert _calls(recorder, f"{prefix}/b") == [f"{run_id}:b:1", f"{run_id}:b:2"]
    assert _calls(recorder, f"{prefix}/c") == [f"{run_id}:c:1"]
    c_call = next(r for r in recorder.requests if r.path == f"{prefix}/c")
    assert c_call.body.replace(b" ", b"") == b'{"n":2}'  # the edited input

    events = api.events(alice.token, run_id)
    assert_gap_free(events)
    assert events[: len(history)] == history  # the first attempt's history is kept as it was
    types = [e["type"] for e in events]
    assert types[len(history) - 1 : len(history) + 1] == ["RUN_FAILED", "RUN_RESUMED"]
    assert types[-1] == "RUN_COMPLETED"
    resumed_event = events[len(history)]
    assert resumed_event["data"]["fromNodeId"] == "b"
    assert resumed_event["data"]["nodes"] == ["b", "c"]
    assert resumed_event["data"]["attempt"] == 2


def test_rerun_defaults_to_the_first_failed_step(
    api: Api, alice: Account, sink: tuple[Sink, str]
) -> None:
    recorder, _ = sink
    failed, prefix = _failed_chain(api, alice, sink)
    rerun(api, alice.token, failed["id"])
    done = wait_run(api, alice.token, failed["id"])
    assert done["status"] == "COMPLETED"
    assert done["input"] == {"n": 1}  # unchanged without an input
    assert len(_calls(recorder, f"{prefix}/a")) == 1


def test_idempotent_rerun_returns_the_same_result(
    api: Api, alice: Account, sink: tuple[Sink, str]
) -> None:
    recorder, _ = sink
    failed, prefix = _failed_chain(api, alice, sink)
    first = rerun(api, alice.token, failed["id"], key="fix-1")
    if api.kind == "rest":
        assert api.last_status == 202  # type: ignore[union-attr]
    wait_run(api, alice.token, failed["id"])
    again = rerun(api, alice.token, failed["id"], key="fix-1")  # the run is COMPLETED by now
    if api.kind == "rest":
        assert api.last_status == 200  # type: ignore[union-attr]
    assert again["id"] == first["id"]
    assert again["status"] == "COMPLETED"
    types = [e["type"] for e in api.events(alice.token, failed["id"])]
    assert types.count("RUN_RESUMED") == 1
    assert len(_calls(recorder, f"{prefix}/b")) == 2
    with pytest.raises(ApiError) as info:  # another key is a new request: a COMPLETED run
        rerun(api, alice.token, failed["id"], key="fix-2")
    assert info.value.code == "CONFLICT"


def test_only_failed_or_cancelled_runs_can_be_rerun(api: Api, alice: Account) -> None:
    nodes = [{"id": "nap", "type": "DELAY", "config": {"seconds": 60}}]
    workflow = api.create_workflow(
        alice.token, name="Nap", definition={"nodes": nodes, "edges": []}
    )
    run = api.execute(alice.token, workflow["id"])
    wait_step(api, alice.token, run["id"], "nap", "RUNNING")
    with pytest.raises(ApiError) as running:
        rerun(api, alice.token, run["id"])
    assert running.value.code == "CONFLICT"
    api.cancel(alice.token, run["id"])
    with pytest.raises(ApiError) as unknown:
        rerun(api, alice.token, run["id"], from_node="nope")
    assert unknown.value.code == "VALIDATION_ERROR"
    resumed = rerun(api, alice.token, run["id"])  # CANCELLED: allowed
    assert resumed["status"] == "RUNNING"
    wait_step(api, alice.token, run["id"], "nap", "RUNNING")
    assert api.cancel(alice.token, run["id"])["status"] == "CANCELLED"
    assert_gap_free(api.events(alice.token, run["id"]))

    quick = [{"id": "t", "type": "TRANSFORM", "config": {"output": 1}}]
    flow = api.create_workflow(alice.token, name="Quick", definition={"nodes": quick, "edges": []})
    completed = wait_run(api, alice.token, api.execute(alice.token, flow["id"])["id"])
    assert completed["status"] == "COMPLETED"
    with pytest.raises(ApiError) as finished:
        rerun(api, alice.token, completed["id"])
    assert finished.value.code == "CONFLICT"
    if api.kind == "rest":
        assert finished.value.status == 409


def test_another_tenants_run_is_not_found(
    api: Api, alice: Account, bob: Account, sink: tuple[Sink, str]
) -> None:
    failed, _ = _failed_chain(api, alice, sink)
    before = api.events(alice.token, failed["id"])
    with pytest.raises(ApiError) as info:
        rerun(api, bob.token, failed["id"], key="steal")
    assert info.value.code == "NOT_FOUND"
    if api.kind == "rest":
        assert info.value.status == 404
    assert api.events(alice.token, failed["id"]) == before
    assert api.get_run(alice.token, failed["id"])["status"] == "FAILED"


def test_a_member_may_rerun_like_execute(api: Api, alice: Account, sink: tuple[Sink, str]) -> None:
    email = unique_email("member")
    api.create_user(alice.token, email=email, password=PASSWORD, name="Mem", role="MEMBER")
    member = api.login(email, PASSWORD)["token"]
    failed, _ = _failed_chain(api, alice, sink)
    assert rerun(api, member, failed["id"])["id"] == failed["id"]
    deadline = time.monotonic() + 30
    while api.get_run(member, failed["id"])["status"] != "COMPLETED":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_a_new_subscriber_follows_both_attempts(
    api: Api, alice: Account, sink: tuple[Sink, str]
) -> None:
    """The stream of a re-run run does not stop at the first attempt's terminal event."""
    failed, _ = _failed_chain(api, alice, sink)
    rerun(api, alice.token, failed["id"])
    wait_run(api, alice.token, failed["id"])
    stored = [e["type"] for e in api.events(alice.token, failed["id"])]
    if isinstance(api, RestApi):
        names = _sse_event_names(api, alice.token, failed["id"])
    else:
        base_url = str(api.http.base_url).rstrip("/")
        got = asyncio.run(follow_run(base_url, alice.token, failed["id"]))
        assert got.completed
        names = [e["type"] for e in got.events]
    assert names == stored
    assert "RUN_FAILED" in names
    assert names[-1] == "RUN_COMPLETED"


def _sse_event_names(api: RestApi, token: str, run_id: str) -> list[str]:
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/runs/{run_id}/stream"
    with api.http.stream("GET", url, headers=headers, timeout=30) as response:
        return [
            line.removeprefix("event: ")
            for line in response.iter_lines()
            if line.startswith("event: ")
        ]


def test_the_retry_policy_counts_afresh_in_a_rerun(
    api: Api, alice: Account, sink: tuple[Sink, str]
) -> None:
    recorder, url = sink
    path = f"/flaky-{api.kind}-{uuid.uuid4().hex[:8]}"
    recorder.script(path, 503, 503, 503, 200)  # attempt 1 spends both tries, the rerun retries
    nodes = [
        {
            "id": "call",
            "type": "HTTP_REQUEST",
            "config": {"method": "POST", "url": f"{url}{path}"},
            "retry": {"maxAttempts": 2, "backoffSeconds": 0.1},
        }
    ]
    workflow = api.create_workflow(alice.token, name="Flaky", definition={"nodes": nodes})
    run_id = api.execute(alice.token, workflow["id"])["id"]
    assert wait_run(api, alice.token, run_id)["status"] == "FAILED"
    rerun(api, alice.token, run_id)
    done = wait_run(api, alice.token, run_id)
    assert done["status"] == "COMPLETED", done
    assert steps_by_node(done)["call"]["attempt"] == 4
    assert _calls(recorder, path) == [f"{run_id}:call:{n}" for n in (1, 2, 3, 4)]
