"""Transactions no wider than the work, and no more of them than needed.

Password hashing (argon2, 64 MiB, a few hundred ms in production) runs with no connection held,
so a crowd of logins shares a tiny pool. A GraphQL page of workflows, their runs and the runs'
steps and events costs a fixed number of transactions and one rate-limit hit, however many
parents.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from tests.conftest import make_settings
from tests.e2e.conftest import PASSWORD, register
from tests.support.client import GraphQLApi, RestApi
from tests.support.live import LiveServer
from treadle.logging import request_id_var
from treadle.ratelimit import RateLimiter
from treadle.security import PasswordHasher

CROWD = 30
RENDEZVOUS_SECONDS = 5.0


@pytest.fixture(scope="module")
def small_pool(
    pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An API on PostgreSQL with two pooled connections and a bounded wait for one."""
    settings = make_settings(
        pg_url,
        Path(tmp_path_factory.mktemp("small-pool")),
        redis_url=redis_url,
        treadle_db_pool_size=1,  # one, plus as many overflow: two connections
        treadle_db_pool_timeout_seconds=10.0,
    )
    with LiveServer.api(settings) as server:
        yield server.base_url


class Rendezvous:
    """Wraps the real ``PasswordHasher.verify``: each call waits (up to a bound) until the whole
    crowd is verifying at once, so the test does not depend on how slow argon2 is on this
    machine. Were a pooled connection held while verifying, no more than two logins could be
    inside at once: the rest would wait for the pool, time out and answer 500."""

    def __init__(self, crowd: int) -> None:
        self.crowd, self.inside, self.most = crowd, 0, 0
        self.full: asyncio.Event | None = None  # made in the server's event loop

    async def wait(self) -> None:
        self.full = self.full or asyncio.Event()
        self.inside += 1
        self.most = max(self.most, self.inside)
        if self.most >= self.crowd:
            self.full.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.full.wait(), RENDEZVOUS_SECONDS)

    def leave(self) -> None:
        self.inside -= 1


async def test_a_crowd_of_logins_shares_a_pool_of_two(
    small_pool: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RestApi(small_pool) as rest:
        account = register(rest, "Crowd")
    rendezvous = Rendezvous(CROWD)
    verify = PasswordHasher.verify

    async def verify_together(self: PasswordHasher, password: str, stored: str | None) -> bool:
        await rendezvous.wait()
        try:
            return await verify(self, password, stored)
        finally:
            rendezvous.leave()

    monkeypatch.setattr(PasswordHasher, "verify", verify_together)
    body = {"email": account.email, "password": PASSWORD}
    async with httpx.AsyncClient(base_url=small_pool, timeout=120) as client:
        responses = await asyncio.gather(
            *(client.post("/api/auth/login", json=body) for _ in range(CROWD))
        )
    assert [r.status_code for r in responses] == [200] * CROWD
    assert rendezvous.most == CROWD  # all were verifying at once, on a pool of two


PAGE_QUERY = """{ workflows(pageSize: 100) { items { id runs(pageSize: 100) { items {
    id events { seq type } steps { nodeId status } } } } } }"""


class Tally:
    """What the server did for each request id: transactions, statements, rate-limit hits.

    The servers under test run in this process (uvicorn in a thread), so engine events and the
    limiter are visible here; the request id tells this request's work from a reaper's.
    """

    def __init__(self) -> None:
        self.seen: Counter[tuple[str | None, str]] = Counter()

    def begin(self, _conn: Any) -> None:
        self.seen[request_id_var.get(), "transaction"] += 1

    def statement(self, _conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if "FROM workflow_events" in sql:
            self.seen[request_id_var.get(), "events query"] += 1

    def of(self, request_id: str) -> dict[str, int]:
        return {what: n for (rid, what), n in self.seen.items() if rid == request_id}


@pytest.fixture
def tally(monkeypatch: pytest.MonkeyPatch) -> Iterator[Tally]:
    counts = Tally()
    hit = RateLimiter.hit

    async def counted_hit(self: RateLimiter, item: Any, name: str, key: str) -> None:
        counts.seen[request_id_var.get(), f"{name} hit"] += 1
        await hit(self, item, name, key)

    monkeypatch.setattr(RateLimiter, "hit", counted_hit)
    event.listen(Engine, "begin", counts.begin)
    event.listen(Engine, "before_cursor_execute", counts.statement)
    try:
        yield counts
    finally:
        event.remove(Engine, "before_cursor_execute", counts.statement)
        event.remove(Engine, "begin", counts.begin)


def _finished_runs(api: GraphQLApi, token: str, workflows: int, runs: int) -> None:
    nodes = [{"id": "one", "type": "TRANSFORM", "config": {"output": {"n": "{{ input.n }}"}}}]
    ids = []
    for w in range(workflows):
        flow = api.create_workflow(token, name=f"w{w}", definition={"nodes": nodes, "edges": []})
        ids += [api.execute(token, flow["id"], {"n": n})["id"] for n in range(runs)]
    deadline = time.monotonic() + 60
    while any(api.get_run(token, run_id)["status"] != "COMPLETED" for run_id in ids):
        assert time.monotonic() < deadline, "runs did not finish"
        time.sleep(0.1)


def test_a_page_of_runs_with_steps_and_events_is_batched(server: str, tally: Tally) -> None:
    with GraphQLApi(server) as api:
        account = register(api, "Pages")
        _finished_runs(api, account.token, workflows=3, runs=4)
        response = api.http.post(
            "/graphql",
            json={"query": PAGE_QUERY},
            headers={"Authorization": f"Bearer {account.token}"},
        )
    body = response.json()
    assert "errors" not in body, body
    flows = body["data"]["workflows"]["items"]
    assert [len(flow["runs"]["items"]) for flow in flows] == [4, 4, 4]
    for run in (run for flow in flows for run in flow["runs"]["items"]):
        assert [e["seq"] for e in run["events"]] == list(range(1, len(run["events"]) + 1))
        assert run["steps"] == [{"nodeId": "one", "status": "COMPLETED"}]
    # The root field, then one batch each for Workflow.runs, Run.events and Run.steps; one
    # query for all 12 runs' events; one count against the API limit. Per parent, this was
    # 1 + 3 + 12 + 1 transactions and as many hits.
    done = tally.of(response.headers["x-request-id"])
    assert done == {"api hit": 1, "transaction": 4, "events query": 1}


def test_one_api_hit_per_request_and_per_graphql_alias(server: str, tally: Tally) -> None:
    with RestApi(server) as rest:
        account = register(rest, "Hits")
        headers = {"Authorization": f"Bearer {account.token}"}
        me = rest.http.get("/api/me", headers=headers)
        aliased = rest.http.post(
            "/graphql",
            json={"query": "{ a: me { id } b: me { id } c: me { id } }"},
            headers=headers,
        )
    assert me.status_code == 200
    assert "errors" not in aliased.json()
    assert tally.of(me.headers["x-request-id"])["api hit"] == 1
    assert tally.of(aliased.headers["x-request-id"])["api hit"] == 3  # aliases count one by one
