"""How many round trips the hot paths cost, counted on the wire (a proxy in front of each of
PostgreSQL and Redis): the execute request in the API, and one pure step in a worker.

Each is measured after a warm-up of the same path, so connection set-up and statement
preparation are not counted; what is counted is what every request and every step pays.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import make_settings
from tests.fakes import serve_app
from tests.fakes.sink import Sink
from tests.support.client import RestApi, unique_email
from tests.support.live import LiveServer
from tests.support.roundtrips import RoundTripProxy, counting
from treadle.queue import StepRef
from treadle.services.execution import advance_step
from treadle.settings import Settings
from treadle.tasks.broker import open_runtime

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

# PostgreSQL: BEGIN, the tenant scope, the workflow, one INSERT of the run with its steps and
# first events, COMMIT (the caller's identity comes from the API's cache). Redis: the API and
# execute rate limits, then one pipeline with the events (run channel, tenant feed) and the
# first step's message.
EXECUTE_PG, EXECUTE_REDIS = 5, 3
# PostgreSQL: BEGIN, the tenant scope, lock the run and read its steps, one write of the run,
# steps and events, COMMIT. Redis: one pipeline with the events (and any step made ready).
PURE_STEP_PG, PURE_STEP_REDIS = 5, 1

# Two HTTP steps, one delivery: claim the first (one transaction), record it and claim the
# second in the next, record the second in the last. Redis: one pipeline after each commit.
HTTP_CHAIN_PG, HTTP_CHAIN_REDIS = 15, 3

PURE = {
    "nodes": [{"id": "only", "type": "TRANSFORM", "config": {"output": {"v": "{{ input.v }}"}}}],
    "edges": [],
}


def _proxied(
    pg_url: str, redis_url: str, pg: RoundTripProxy, redis: RoundTripProxy
) -> tuple[str, str]:
    db = make_url(pg_url).set(host="127.0.0.1", port=pg.port)
    cache = make_url(redis_url.replace("redis://", "postgresql://", 1))
    return (
        db.render_as_string(hide_password=False),
        f"redis://127.0.0.1:{redis.port}/{cache.database or 0}",
    )


@pytest.fixture
def proxies(private_pg_url: str, redis_url: str) -> tuple[RoundTripProxy, RoundTripProxy]:
    pg = make_url(private_pg_url)
    cache = make_url(redis_url.replace("redis://", "postgresql://", 1))
    return RoundTripProxy(pg.host or "127.0.0.1", pg.port or 5432), RoundTripProxy(
        cache.host or "127.0.0.1", cache.port or 6379
    )


def test_execute_and_pure_step_round_trips(
    private_pg_url: str,
    redis_url: str,
    proxies: tuple[RoundTripProxy, RoundTripProxy],
    tmp_path: Path,
) -> None:
    pg, redis = proxies
    with pg, redis:
        db_url, cache_url = _proxied(private_pg_url, redis_url, pg, redis)
        settings = make_settings(db_url, tmp_path, redis_url=cache_url)
        with LiveServer.api(settings) as server, RestApi(server.base_url) as api:
            auth = api.register("RoundTrips", unique_email("rt"), "correct horse battery", "R")
            token = auth["token"]
            workflow = api.create_workflow(token, name="Pure", definition=PURE)
            warm = api.execute(token, workflow["id"], {"v": 1})
            with counting(pg, redis) as execute:
                run = api.execute(token, workflow["id"], {"v": 2})
        steps = asyncio.run(_advance(settings, pg, redis, warm, run, auth["tenant"]["id"]))
    assert (execute[0], execute[1]) == (EXECUTE_PG, EXECUTE_REDIS)
    assert steps == [PURE_STEP_PG, PURE_STEP_REDIS]


async def _advance(
    settings: Settings,
    pg: RoundTripProxy,
    redis: RoundTripProxy,
    warm: dict[str, object],
    run: dict[str, object],
    tenant_id: str,
) -> list[int]:
    """Advance the warm-up run's step, then count the measured run's (as a worker would)."""
    async with open_runtime(settings) as resources:
        for which, measured in ((warm, False), (run, True)):
            steps = which["steps"]
            assert isinstance(steps, list)
            ref = StepRef(
                uuid.UUID(steps[0]["id"]), uuid.UUID(str(which["id"])), uuid.UUID(tenant_id)
            )
            if not measured:
                await advance_step(resources, ref.step_id, ref=ref)
                continue
            with counting(pg, redis) as counts:
                await advance_step(resources, ref.step_id, ref=ref)
    return counts


def _http_chain(url: str) -> dict[str, object]:
    nodes = [
        {"id": f"h{i}", "type": "HTTP_REQUEST", "config": {"method": "POST", "url": f"{url}/h{i}"}}
        for i in range(2)
    ]
    return {"nodes": nodes, "edges": [{"from": "h0", "to": "h1"}]}


def test_one_delivery_runs_the_steps_it_makes_ready(
    private_pg_url: str,
    redis_url: str,
    proxies: tuple[RoundTripProxy, RoundTripProxy],
    tmp_path: Path,
) -> None:
    """Recording a step claims the next one and runs it at once: no queue hop, no claim of its
    own; every step still gets its attempt, lease, events and fenced record."""
    pg, redis = proxies
    recorder = Sink()
    with pg, redis, serve_app(recorder.app) as sink_url:
        db_url, cache_url = _proxied(private_pg_url, redis_url, pg, redis)
        settings = make_settings(db_url, tmp_path, redis_url=cache_url)
        with LiveServer.api(settings) as server, RestApi(server.base_url) as api:
            auth = api.register("Chain", unique_email("chain"), "correct horse battery", "C")
            token = auth["token"]
            workflow = api.create_workflow(token, name="Http", definition=_http_chain(sink_url))
            warm = api.execute(token, workflow["id"])
            run = api.execute(token, workflow["id"])
            counts = asyncio.run(_advance(settings, pg, redis, warm, run, auth["tenant"]["id"]))
            done = api.get_run(token, run["id"])
            events = api.events(token, run["id"])
    assert done["status"] == "COMPLETED"
    assert [step["attempt"] for step in done["steps"]] == [1, 1]
    types = [e["type"] for e in events]
    assert types.count("STEP_STARTED") == 2, types
    assert types.count("STEP_COMPLETED") == 2, types
    assert [e["seq"] for e in events] == list(range(1, len(types) + 1))
    assert counts == [HTTP_CHAIN_PG, HTTP_CHAIN_REDIS]
