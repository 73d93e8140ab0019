"""Live fan-out: ``follow_events`` on the in-process bus, and runEvents over real websockets on
PostgreSQL + Redis (bursts, reconnects, two API replicas, a stalled subscriber).

Events are written the way the engine writes them: ``EventWriter`` in the run's locked
transaction, published after commit (``publish_events``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import event
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.conftest import make_settings
from tests.support.client import unique_email
from tests.support.live import LiveServer, WorkerProcess
from tests.support.ws import Collected, GraphQLWs, Stalled, follow_run, rest_client
from treadle.app import create_app
from treadle.engine.states import EventType, RunStatus
from treadle.errors import RateLimitedError
from treadle.models import Tenant, Workflow, WorkflowRun
from treadle.models.base import utcnow
from treadle.pubsub import RESYNC, MemoryEventBus, RedisEventBus, run_channel
from treadle.resources import Resources
from treadle.services import follow as follow_mod
from treadle.services.events import publish_events
from treadle.services.follow import follow_events
from treadle.services.runtxn import load_run_txn
from treadle.services.views import EventView
from treadle.settings import Settings
from treadle.tasks.broker import open_runtime
from treadle.tenancy import SYSTEM, transaction

PASSWORD = "correct horse battery"
QUICK_POLL = {"treadle_subscriber_poll_seconds": 0.3}
DEFINITION: dict[str, Any] = {
    "nodes": [{"id": "n", "type": "TRANSFORM", "config": {"output": {}}}],
    "edges": [],
}


# --- writing events like the engine does ---------------------------------------------------


@dataclass
class Owner:
    tenant_id: uuid.UUID
    workflow_id: uuid.UUID
    token: str = ""


async def bare_run(res: Resources, owner: Owner) -> uuid.UUID:
    """A RUNNING run with no steps, so nothing but the test writes its events."""
    run = WorkflowRun(
        id=uuid.uuid4(),
        tenant_id=owner.tenant_id,
        workflow_id=owner.workflow_id,
        workflow_version=1,
        definition=DEFINITION,
        status=RunStatus.RUNNING,
        input={},
        last_seq=0,
        created_at=utcnow(),
    )
    async with transaction(res, owner.tenant_id) as session:
        session.add(run)
    return run.id


async def append(
    res: Resources,
    owner: Owner,
    run_id: uuid.UUID,
    types: list[EventType],
    *,
    publish: bool = True,
    pad: int = 0,
) -> list[EventView]:
    """One transaction appending ``types``; published after commit unless told otherwise."""
    async with transaction(res, owner.tenant_id) as session:
        txn = await load_run_txn(session, res, run_id)
        for type_ in types:
            txn.writer.append(type_, "n", {"pad": "x" * pad} if pad else {})
            if type_ == EventType.RUN_COMPLETED:
                txn.run.status = RunStatus.COMPLETED
        await txn.save()
        views = txn.writer.views()
    if publish:
        await publish_events(res.bus, owner.tenant_id, views)
    return views


async def burst(
    res: Resources, owner: Owner, run_id: uuid.UUID, count: int, *, batch: int = 1, pad: int = 0
) -> None:
    for start in range(0, count, batch):
        size = min(batch, count - start)
        await append(res, owner, run_id, [EventType.STEP_STARTED] * size, pad=pad)


async def finish(res: Resources, owner: Owner, run_id: uuid.UUID) -> None:
    await append(res, owner, run_id, [EventType.RUN_COMPLETED])


async def last_seq(res: Resources, owner: Owner, run_id: uuid.UUID) -> int:
    async with transaction(res, owner.tenant_id) as session:
        run = await session.get(WorkflowRun, run_id)
        assert run is not None
        return run.last_seq


def same_event(event: dict[str, Any]) -> tuple[Any, ...]:
    """An event's fields, ``createdAt`` as a datetime (GraphQL and REST spell UTC differently)."""
    created = datetime.fromisoformat(event["createdAt"].replace("Z", "+00:00"))
    return event["id"], event["seq"], event["type"], event["nodeId"], event["data"], created


def assert_exactly(collected: Collected, count: int) -> None:
    assert not collected.errors, collected.errors
    assert collected.completed
    assert collected.seqs == list(range(1, count + 1))


# --- follow_events on the in-process bus (SQLite) --------------------------------------------


@pytest.fixture
async def local(sqlite_url: str, tmp_path: Path) -> AsyncIterator[tuple[Resources, Owner]]:
    settings = make_settings(
        sqlite_url, tmp_path, treadle_subscriber_buffer=4, treadle_subscriber_poll_seconds=30
    )
    async with open_runtime(settings, embedded=True) as res:
        owner = Owner(uuid.uuid4(), uuid.uuid4())
        async with transaction(res, SYSTEM) as session:
            session.add(Tenant(id=owner.tenant_id, name="Local"))
            await session.flush()
            session.add(
                Workflow(
                    id=owner.workflow_id,
                    tenant_id=owner.tenant_id,
                    name="w",
                    definition=DEFINITION,
                )
            )
        yield res, owner


async def take(follower: AsyncIterator[Any], count: int, seconds: float = 2) -> list[Any]:
    async with asyncio.timeout(seconds):
        return [await anext(follower) for _ in range(count)]


async def test_follow_rereads_the_database_on_a_gap(local: tuple[Resources, Owner]) -> None:
    res, owner = local
    run_id = await bare_run(res, owner)
    await burst(res, owner, run_id, 3)
    follower = follow_events(res, owner.tenant_id, run_id, 0)
    assert [e.seq for e in await take(follower, 3)] == [1, 2, 3]  # history
    written = await append(res, owner, run_id, [EventType.STEP_STARTED] * 2, publish=False)
    await publish_events(res.bus, owner.tenant_id, written[1:])  # seq 4 is never published
    assert [e.seq for e in await take(follower, 2)] == [4, 5]  # long before the 30 s poll
    await follower.aclose()


async def test_followers_reading_the_same_page_together_share_one_query(
    local: tuple[Resources, Owner],
) -> None:
    res, owner = local
    run_id = await bare_run(res, owner)
    await burst(res, owner, run_id, 3)
    statements: list[str] = []

    def count(*args: Any) -> None:
        if "FROM workflow_events" in str(args[2]):
            statements.append(args[2])

    event.listen(res.engine.sync_engine, "before_cursor_execute", count)
    try:
        followers = [follow_events(res, owner.tenant_id, run_id, 0) for _ in range(100)]
        pages = await asyncio.gather(*(take(f, 3) for f in followers))
    finally:
        event.remove(res.engine.sync_engine, "before_cursor_execute", count)
    assert all([e.seq for e in page] == [1, 2, 3] for page in pages)
    assert len(statements) == 1  # 100 followers attached at once: one read, not 100
    for follower in followers:
        await follower.aclose()


async def test_follow_resumes_from_the_database_after_overflow(
    local: tuple[Resources, Owner],
) -> None:
    res, owner = local
    run_id = await bare_run(res, owner)
    follower = follow_events(res, owner.tenant_id, run_id, 0)
    await burst(res, owner, run_id, 1)
    assert [e.seq for e in await take(follower, 1)] == [1]
    before = res.bus.stats().overflows
    await burst(res, owner, run_id, 10)  # buffer is 4 and the follower is not reading
    await finish(res, owner, run_id)
    assert res.bus.stats().overflows == before + 1
    rest = [e async for e in follower]  # ends by itself after RUN_COMPLETED
    assert [getattr(e, "seq", None) for e in rest] == list(range(2, 13))
    assert res.bus.stats().subscriptions == 0


async def _parked(follower: AsyncIterator[Any]) -> asyncio.Future[Any]:
    """Ask ``follower`` for its next item and let it park on the channel."""
    pending = asyncio.ensure_future(anext(follower))
    await asyncio.sleep(0.05)
    assert not pending.done()
    return pending


async def test_a_caught_up_follower_takes_live_events_inline_without_database_reads(
    local: tuple[Resources, Owner], monkeypatch: pytest.MonkeyPatch
) -> None:
    res, owner = local
    run_id = await bare_run(res, owner)
    written: list[Any] = []

    def sink(item: Any) -> bool:
        written.append(getattr(item, "seq", item))
        return True

    follower = follow_events(res, owner.tenant_id, run_id, 0, sink)
    await burst(res, owner, run_id, 2)
    assert [e.seq for e in await take(follower, 2)] == [1, 2]  # history: through the generator
    pending = await _parked(follower)
    reads: list[int] = []
    original = follow_mod._read_page

    async def counted(*args: Any) -> list[EventView]:
        reads.append(1)
        return await original(*args)

    monkeypatch.setattr(follow_mod, "_read_page", counted)
    await burst(res, owner, run_id, 20)  # more than the buffer (4): inline, nothing buffered
    channel = run_channel(owner.tenant_id, run_id)
    delta = {"type": "STEP_OUTPUT_DELTA", "runId": str(run_id), "nodeId": "n", "data": {}}
    await res.bus.publish(channel, delta)
    await finish(res, owner, run_id)  # the terminal event inline too; then the stream ends
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 2)
    assert written == [*range(3, 23), delta, 23]
    assert reads == []  # no database read per live event
    assert res.bus.stats().overflows == 0
    assert res.bus.stats().subscriptions == 0


async def test_a_sink_that_declines_hands_over_to_the_generator_in_order(
    local: tuple[Resources, Owner],
) -> None:
    res, owner = local
    run_id = await bare_run(res, owner)
    log: list[tuple[str, int]] = []
    refuse = {4, 9}

    def sink(item: Any) -> bool:
        if item.seq in refuse:
            refuse.discard(item.seq)  # like a socket that is paused for a moment
            return False
        log.append(("inline", item.seq))
        return True

    follower = follow_events(res, owner.tenant_id, run_id, 0, sink)
    await burst(res, owner, run_id, 2)
    assert [e.seq for e in await take(follower, 2)] == [1, 2]
    pending = await _parked(follower)

    async def consume() -> None:
        item = await pending
        while True:
            log.append(("yielded", item.seq))
            try:
                item = await anext(follower)
            except StopAsyncIteration:
                return

    consumer = asyncio.create_task(consume())
    await burst(res, owner, run_id, 10, batch=3)  # 3..12, three to a transaction
    await finish(res, owner, run_id)
    await asyncio.wait_for(consumer, 5)
    assert [seq for _, seq in log] == list(range(3, 14))  # once each, in order, either way
    assert ("yielded", 4) in log
    assert ("yielded", 9) in log
    assert any(how == "inline" for how, _ in log)


async def test_follow_drops_late_deltas_and_ends_at_once_when_finished(
    local: tuple[Resources, Owner],
) -> None:
    res, owner = local
    run_id = await bare_run(res, owner)
    channel = run_channel(owner.tenant_id, run_id)
    follower = follow_events(res, owner.tenant_id, run_id, 0)
    await append(res, owner, run_id, [EventType.STEP_STARTED])
    assert [e.seq for e in await take(follower, 1)] == [1]
    delta = {"type": "STEP_OUTPUT_DELTA", "runId": str(run_id), "nodeId": "n", "data": {}}
    await res.bus.publish(channel, delta)
    assert await take(follower, 1) == [delta]
    await append(res, owner, run_id, [EventType.STEP_COMPLETED])
    await res.bus.publish(channel, delta)  # after the node completed: never forwarded
    await finish(res, owner, run_id)
    assert [getattr(e, "seq", e) for e in [e async for e in follower]] == [2, 3]
    again = follow_events(res, owner.tenant_id, run_id, 3)
    assert [e async for e in again] == []  # nothing after seq 3 and the run is over


async def test_a_quiet_run_is_checked_once_and_a_lost_event_reaches_every_follower(
    local: tuple[Resources, Owner],
) -> None:
    res, owner = local
    res = dataclasses.replace(res, settings=res.settings.model_copy(update=QUICK_POLL))
    run_id = await bare_run(res, owner)
    await burst(res, owner, run_id, 1)
    followers = [follow_events(res, owner.tenant_id, run_id, 0) for _ in range(3)]
    for follower in followers:
        assert [e.seq for e in await take(follower, 1)] == [1]
    await append(res, owner, run_id, [EventType.STEP_STARTED], publish=False)  # publish lost
    for follower in followers:
        assert [e.seq for e in await take(follower, 1)] == [2]  # found by one poll, then resync
        await follower.aclose()


async def test_bus_bounds_subscriptions_per_tenant() -> None:
    bus = MemoryEventBus()
    async with contextlib.AsyncExitStack() as stack:
        for run in range(3):
            await stack.enter_async_context(
                bus.subscribe(run_channel("t1", str(run)), tenant_limit=3)
            )
        await stack.enter_async_context(bus.subscribe(run_channel("t2", "0"), tenant_limit=3))
        with pytest.raises(RateLimitedError):
            await stack.enter_async_context(bus.subscribe(run_channel("t1", "9"), tenant_limit=3))
    async with bus.subscribe(run_channel("t1", "9"), tenant_limit=3):
        assert bus.stats().subscriptions == 1


# --- over websockets on PostgreSQL + Redis ---------------------------------------------------


class StateCapture:
    """ASGI wrapper keeping the lifespan state, so a test can look at the server's bus."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            self.state = scope["state"]
        await self.app(scope, receive, send)

    @property
    def resources(self) -> Resources:
        resources: Resources = self.state["resources"]
        return resources


@dataclass
class Fanout:
    url: str
    server: StateCapture
    writer: Resources
    owner: Owner


@pytest.fixture(scope="module")
def fanout_settings(
    private_pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    return make_settings(
        private_pg_url,
        tmp_path_factory.mktemp("fanout"),
        redis_url=redis_url,
        treadle_subscriber_buffer=16,
    )


@pytest.fixture(scope="module")
def fanout_server(fanout_settings: Settings) -> Iterator[tuple[str, StateCapture, Owner]]:
    capture = StateCapture(create_app(fanout_settings))
    with LiveServer(capture) as server, rest_client(server.base_url) as api:
        body = api.register("Fanout", unique_email("fanout"), PASSWORD, "Fan Out")
        workflow = api.create_workflow(body["token"], name="w", definition=DEFINITION)
        owner = Owner(uuid.UUID(body["tenant"]["id"]), uuid.UUID(workflow["id"]), body["token"])
        yield server.base_url, capture, owner


@pytest.fixture(scope="module")
async def fanout(
    fanout_settings: Settings, fanout_server: tuple[str, StateCapture, Owner]
) -> AsyncIterator[Fanout]:
    url, capture, owner = fanout_server
    async with open_runtime(fanout_settings) as writer:
        yield Fanout(url, capture, writer, owner)


async def until(predicate: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.redis
async def test_burst_of_1000_replays_then_streams_without_gap_or_duplicate(
    fanout: Fanout,
) -> None:
    res, owner = fanout.writer, fanout.owner
    run_id = await bare_run(res, owner)
    early = asyncio.create_task(follow_run(fanout.url, owner.token, str(run_id), seconds=60))
    # Three concurrent writers: commits interleave, so publishes arrive out of seq order.
    writers = [asyncio.create_task(burst(res, owner, run_id, 333, batch=3)) for _ in range(3)]

    async def halfway() -> bool:
        return await last_seq(res, owner, run_id) >= 400

    await until(halfway)
    late = asyncio.create_task(follow_run(fanout.url, owner.token, str(run_id), seconds=60))
    await asyncio.gather(*writers)
    await finish(res, owner, run_id)
    assert_exactly(await early, 1000)
    assert_exactly(await late, 1000)


@pytest.mark.postgres
@pytest.mark.redis
async def test_reconnect_with_the_last_seq_gets_the_rest_once(fanout: Fanout) -> None:
    res, owner = fanout.writer, fanout.owner
    run_id = await bare_run(res, owner)
    writing = asyncio.create_task(burst(res, owner, run_id, 600, batch=2))
    async with GraphQLWs.connect(fanout.url, owner.token) as ws:
        first = await ws.collect(await ws.run_events(str(run_id)), limit=250)
    assert not first.completed  # the socket closed mid-stream
    second = asyncio.create_task(
        follow_run(fanout.url, owner.token, str(run_id), after_seq=first.seqs[-1])
    )
    await writing
    await finish(res, owner, run_id)
    rest = await second
    assert rest.completed
    assert first.seqs + rest.seqs == list(range(1, 602))


@pytest.mark.postgres
@pytest.mark.redis
async def test_a_stalled_subscriber_neither_delays_others_nor_buffers_without_bound(
    fanout: Fanout,
) -> None:
    res, owner = fanout.writer, fanout.owner
    bus = fanout.server.resources.bus
    run_id = await bare_run(res, owner)
    stalled = await Stalled.open(fanout.url, owner.token, str(run_id))
    try:
        healthy = asyncio.create_task(follow_run(fanout.url, owner.token, str(run_id)))

        async def both_attached() -> bool:
            return bus.subscribers(run_channel(owner.tenant_id, run_id)) == 2

        await until(both_attached)
        overflows = bus.stats().overflows
        # 6 MB: more than the socket can absorb (the kernel send buffer grows to 4 MiB here), so
        # the stalled socket pauses and its bounded buffer overflows, however fast the writes.
        await burst(res, owner, run_id, 1000, batch=20, pad=6000)
        started = time.monotonic()
        await finish(res, owner, run_id)
        assert_exactly(await healthy, 1001)
        assert time.monotonic() - started < 3.0
        assert bus.stats().overflows > overflows  # the stalled one's 16-message buffer filled
        # Reading again, it gets everything, resumed from the database by seq.
        assert_exactly(await stalled.resume(), 1001)
    finally:
        await stalled.cm.__aexit__(None, None, None)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
async def test_a_run_on_one_replica_streams_live_to_a_subscriber_on_another(
    fanout: Fanout, fanout_settings: Settings
) -> None:
    # Replica 2 never polls in this test's time: everything after attaching comes via Redis.
    quiet = fanout_settings.model_copy(update={"treadle_subscriber_poll_seconds": 120.0})
    nodes = [
        {"id": "wait", "type": "DELAY", "config": {"seconds": 1}},
        {"id": "a", "type": "TRANSFORM", "config": {"output": {"v": 1}}},
        {"id": "b", "type": "TRANSFORM", "config": {"output": {"v": 2}}},
    ]
    definition = {"nodes": nodes, "edges": [{"from": "wait", "to": "a"}, {"from": "a", "to": "b"}]}
    token = fanout.owner.token
    with (
        WorkerProcess(fanout_settings),
        LiveServer.api(quiet) as replica2,
        rest_client(fanout.url) as replica1,
    ):
        workflow = await asyncio.to_thread(
            replica1.create_workflow, token, name="r", definition=definition
        )
        run = await asyncio.to_thread(replica1.execute, token, workflow["id"])
        collected = await follow_run(replica2.base_url, token, run["id"], seconds=30)
        stored = await asyncio.to_thread(replica1.events, token, run["id"])
    assert collected.completed
    assert not collected.errors
    assert [same_event(e) for e in collected.events] == [same_event(e) for e in stored]
    assert stored[-1]["type"] == "RUN_COMPLETED"


@pytest.mark.redis
async def test_redis_bus_asks_for_a_resync_after_losing_its_connection(redis_url: str) -> None:
    name = f"treadle-test-{uuid.uuid4().hex[:8]}"
    redis, admin = Redis.from_url(redis_url, client_name=name), Redis.from_url(redis_url)
    bus = RedisEventBus(redis)
    channel = run_channel("t", uuid.uuid4())
    try:
        async with bus.subscribe(channel) as sub:
            await bus.publish(channel, {"seq": 1})
            assert await sub.get(5) == {"seq": 1}
            for client in await admin.client_list():
                if client.get("name") == name and "P" in client.get("flags", ""):
                    await admin.client_kill_filter(_id=client["id"])
            assert await sub.get(5) == RESYNC
            assert sub.take_overflow()  # the follower re-reads the database now
            for _ in range(50):  # live again once redis-py has re-subscribed
                await bus.publish(channel, {"seq": 2})
                if await sub.get(0.1) == {"seq": 2}:
                    break
            else:
                pytest.fail("no live message after the reconnect")
    finally:
        await bus.aclose()
        await redis.aclose()
        await admin.aclose()
