"""The floor: what the infrastructure alone costs, measured in the same benchmark run.

- Bare Taskiq tasks on a ``RedisStreamBroker`` configured like Treadle's (same Redis, its own
  stream), run by ``taskiq worker bench.floor:broker`` with Treadle's worker flags. The shapes
  mirror the workloads: one hop (W1), 100 sequential hops where each task kicks the next (W2),
  300 chains of 3 kicked at once (W3), 1 → 100 → join (W4; the join is kicked by the leaf that
  brings a Redis counter to 100). A finished chain pushes onto a Redis list the benchmark pops.
- PostgreSQL single-row ``INSERT`` + commit rate with asyncpg, 1 and 4 clients, ~2 s each.

This module is also the worker's broker module, so it only builds the broker at import time
(from ``BENCH_FLOOR_REDIS_URL`` / ``BENCH_FLOOR_QUEUE``); connections open on start-up.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
from redis.asyncio import Redis
from taskiq import AsyncBroker, Context, TaskiqDepends
from taskiq.events import TaskiqEvents
from taskiq.state import TaskiqState
from taskiq_redis import RedisStreamBroker

from bench.procs import Process, clean_env, pg_dsn

HOP: Final = "bench.floor.hop"
FAN: Final = "bench.floor.fan"
LEAF: Final = "bench.floor.leaf"
JOIN: Final = "bench.floor.join"
DEFAULT_REDIS: Final = "redis://127.0.0.1:6379/14"


# --- worker side -------------------------------------------------------------------------------


async def hop(done_key: str, remaining: int, context: Context = TaskiqDepends()) -> None:  # noqa: B008
    """One step of a chain: kick the next hop, or signal the chain's end."""
    if remaining > 1:
        await _kick(context.broker, HOP, done_key, remaining - 1)
    else:
        await context.state.redis.rpush(done_key, time.time())


async def fan(done_key: str, width: int, context: Context = TaskiqDepends()) -> None:  # noqa: B008
    for _ in range(width):
        await _kick(context.broker, LEAF, done_key, width)


async def leaf(done_key: str, width: int, context: Context = TaskiqDepends()) -> None:  # noqa: B008
    if await context.state.redis.incr(done_key + ":joined") == width:
        await _kick(context.broker, JOIN, done_key)


async def join(done_key: str, context: Context = TaskiqDepends()) -> None:  # noqa: B008
    await context.state.redis.rpush(done_key, time.time())


async def _kick(broker: AsyncBroker, name: str, *args: Any) -> None:
    task = broker.find_task(name)
    if task is None:
        raise RuntimeError(f"broker has no task {name}")
    await task.kiq(*args)


def make_broker(url: str, queue: str) -> RedisStreamBroker:
    """A broker with the options ``treadle.tasks.broker`` uses, and the floor's tasks."""
    broker = RedisStreamBroker(
        url,
        queue_name=queue,
        consumer_group_name=queue,
        idle_timeout=600_000,
        xread_block=1000,
        unacknowledged_lock_timeout=5,
        maxlen=1_000_000,
    )
    for func, name in ((hop, HOP), (fan, FAN), (leaf, LEAF), (join, JOIN)):
        broker.register_task(func, task_name=name)

    async def on_startup(state: TaskiqState) -> None:
        state.redis = Redis.from_url(url)

    async def on_shutdown(state: TaskiqState) -> None:
        await state.redis.aclose()

    broker.add_event_handler(TaskiqEvents.WORKER_STARTUP, on_startup)
    broker.add_event_handler(TaskiqEvents.WORKER_SHUTDOWN, on_shutdown)
    return broker


broker = make_broker(
    os.environ.get("BENCH_FLOOR_REDIS_URL", DEFAULT_REDIS),
    os.environ.get("BENCH_FLOOR_QUEUE", "bench:floor"),
)


# --- benchmark side ----------------------------------------------------------------------------


def floor_worker(redis_url: str, queue: str, workers: int, log: Path) -> Process:
    """``taskiq worker bench.floor:broker`` with the flags ``treadle worker`` passes."""
    argv = [
        sys.executable,
        "-m",
        "taskiq",
        "worker",
        "bench.floor:broker",
        "--workers",
        str(workers),
        "--max-async-tasks",
        "32",
        "--ack-type",
        "when_executed",
        "--wait-tasks-timeout",
        "5",
        "--no-configure-logging",
    ]
    env = clean_env({"BENCH_FLOOR_REDIS_URL": redis_url, "BENCH_FLOOR_QUEUE": queue})
    return Process(f"floor worker x{workers}", argv, env, log)


@dataclass(slots=True)
class FloorClient:
    """Kicks the floor's tasks and waits for their end signals."""

    broker: RedisStreamBroker
    redis: Redis

    @classmethod
    async def open(cls, url: str, queue: str) -> FloorClient:
        client_broker = make_broker(url, queue)
        await client_broker.startup()
        return cls(client_broker, Redis.from_url(url))

    async def aclose(self) -> None:
        await self.broker.shutdown()
        await self.redis.aclose()

    async def _wait(self, key: str, count: int, limit: float = 120) -> float:
        deadline = time.monotonic() + limit
        for _ in range(count):
            left = deadline - time.monotonic()
            if left <= 0 or await self.redis.blpop([key], timeout=left) is None:
                raise RuntimeError(f"floor: {key} did not finish in {limit:g} s")
        return time.perf_counter()

    async def chain(self, length: int) -> float:
        """Seconds for one chain of ``length`` hops."""
        key = f"bench:floor:done:{uuid.uuid4().hex}"
        started = time.perf_counter()
        await _kick(self.broker, HOP, key, length)
        return await self._wait(key, 1) - started

    async def chains(self, count: int, length: int) -> float:
        """Seconds for ``count`` chains of ``length`` hops kicked at once."""
        key = f"bench:floor:done:{uuid.uuid4().hex}"
        started = time.perf_counter()
        await asyncio.gather(*(_kick(self.broker, HOP, key, length) for _ in range(count)))
        return await self._wait(key, count) - started

    async def fan_out(self, width: int) -> float:
        key = f"bench:floor:done:{uuid.uuid4().hex}"
        started = time.perf_counter()
        await _kick(self.broker, FAN, key, width)
        return await self._wait(key, 1) - started


async def wait_listeners(redis_url: str, count: int, limit: float = 60) -> None:
    """Wait until ``count`` connections block in ``XREADGROUP`` on the benchmark's Redis database.

    (Redis 7.0 lists a consumer only once it has been served a message, so the consumer group
    cannot tell whether idle workers listen; the benchmark's processes run one set at a time.)
    """
    client = Redis.from_url(redis_url)
    db = int(client.connection_pool.connection_kwargs.get("db", 0))
    deadline = time.monotonic() + limit
    try:
        while time.monotonic() < deadline:
            clients = await client.client_list()
            listening = [c for c in clients if c.get("cmd") == "xreadgroup" and int(c["db"]) == db]
            if len(listening) >= count:
                return
            await asyncio.sleep(0.1)
    finally:
        await client.aclose()
    raise RuntimeError(f"{count} workers did not start listening on {redis_url}")


async def pg_commit_rate(url: str, clients: int, seconds: float) -> float:
    """Single-row ``INSERT`` + commit per statement (autocommit), rows per second."""
    connections = [await asyncpg.connect(pg_dsn(url)) for _ in range(clients)]
    try:
        await connections[0].execute(
            "CREATE TABLE IF NOT EXISTS bench_floor_commit ("
            " id bigserial PRIMARY KEY, run_id uuid NOT NULL, data jsonb NOT NULL,"
            " created_at timestamptz NOT NULL DEFAULT now())"
        )
        statement = "INSERT INTO bench_floor_commit (run_id, data) VALUES ($1, $2)"
        payload = '{"n": 1, "type": "STEP_COMPLETED"}'
        deadline = time.perf_counter() + seconds

        async def insert(conn: asyncpg.Connection) -> int:
            done = 0
            while time.perf_counter() < deadline:
                await conn.execute(statement, uuid.uuid4(), payload)
                done += 1
            return done

        started = time.perf_counter()
        counts = await asyncio.gather(*(insert(conn) for conn in connections))
        return sum(counts) / (time.perf_counter() - started)
    finally:
        for conn in connections:
            await conn.close()
