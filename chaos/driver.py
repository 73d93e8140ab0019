"""The chaos timeline: start runs, follow some, inject faults, wait for the runs to settle."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from chaos.cluster import Api, Cluster
from chaos.extras import Extras
from chaos.subscribers import Follower, attached_to
from chaos.verdict import TERMINAL_RUN, Faults
from chaos.workload import Client, Started
from treadle.dbadmin import pg_dsn

SUBSCRIBER_GRACE = 20.0  # seconds subscribers get after the last run ended, to see its end


@dataclass(frozen=True)
class Plan:
    runs: int
    spread: float  # seconds over which runs are started
    kill_every: float
    min_kills: int
    timeout: float  # seconds from the first start until every run must be terminal
    subscribers: int
    seed: int
    log_dir: Path

    def start_at(self, index: int) -> float:
        """Seconds after the first start at which run ``index`` is started."""
        return index * self.spread / self.runs

    def followed(self, apis: int) -> dict[int, int]:
        """Run index -> the API its subscriber tries first.

        Half the subscribers follow the runs started just before the API kill, all on API 0
        (the likely victim), so that several are live when it dies; the rest are spread evenly
        over the whole window, alternating between the APIs.
        """
        if self.subscribers <= 0:
            return {}
        burst = [
            i
            for i in range(self.runs)
            if self.api_kill_at() - 2 <= self.start_at(i) < self.api_kill_at()
        ][-(self.subscribers // 2) :]
        chosen = dict.fromkeys(burst, 0)
        rest = self.subscribers - len(chosen)
        step = self.runs / max(1, rest)
        for k in range(rest):
            index = int(k * step)
            while index in chosen and index + 1 < self.runs:
                index += 1
            chosen.setdefault(index, k % apis)
        return chosen

    def api_kill_at(self) -> float:
        return 0.35 * self.spread

    def redis_restart_at(self) -> float:
        return 0.55 * self.spread

    def pg_terminate_at(self) -> float:
        return 0.8 * self.spread


def say(message: str) -> None:
    print(f"chaos: {message}", file=sys.stderr, flush=True)  # noqa: T201


class Progress:
    """Counts runs by status, straight from the database (the APIs may be down)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self.total = self.terminal = self.completed = 0

    async def poll(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, timeout=5)
            rows = await self._conn.fetch(
                "SELECT status, count(*) AS n FROM workflow_runs GROUP BY status"
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            await self.close()  # terminated with the others, or busy: try again next time
            return False
        counts = {row["status"]: row["n"] for row in rows}
        self.total = sum(counts.values())
        self.terminal = sum(n for status, n in counts.items() if status in TERMINAL_RUN)
        self.completed = counts.get("COMPLETED", 0)
        return True

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


class Injector:
    """Runs the fault timeline against the cluster."""

    def __init__(self, cluster: Cluster, plan: Plan, followers: list[Follower]) -> None:
        self.cluster, self.plan, self.followers = cluster, plan, followers
        self.faults = Faults()
        self.rng = random.Random(plan.seed)  # noqa: S311 - choosing victims, not secrets
        self.down: set[str] = set()  # children taken down on purpose, not to be revived

    async def run(self, t0: float, deadline: float) -> None:
        """Worker kills on their beat and the one-off faults on theirs, side by side."""
        began = time.monotonic()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._kill_loop(t0, deadline))
                group.create_task(self._one_shots(t0, deadline))
        finally:
            self.faults.seconds = time.monotonic() - began
        self.revive_dead()

    async def _kill_loop(self, t0: float, deadline: float) -> None:
        next_kill = t0 + self.plan.kill_every
        while len(self.faults.kills) < self.plan.min_kills and next_kill < deadline:
            await _sleep_until(next_kill)
            next_kill += self.plan.kill_every
            self.revive_dead()
            self.kill_worker()

    async def _one_shots(self, t0: float, deadline: float) -> None:
        plan = self.plan
        timeline: list[tuple[float, Callable[[], Awaitable[None]]]] = [
            (plan.api_kill_at(), self.kill_api),
            (plan.redis_restart_at(), self.restart_redis),
            (plan.pg_terminate_at(), self.terminate_pg),
        ]
        for offset, action in sorted(timeline, key=lambda item: item[0]):
            if t0 + offset >= deadline:
                return
            await _sleep_until(t0 + offset)
            await action()

    def revive_dead(self) -> None:
        """A child that died on its own is noted and restarted (only kills are expected)."""
        for child in [*self.cluster.workers, *self.cluster.apis]:
            if not child.alive and child.name not in self.down:
                self.faults.unexpected_exits[child.name] += 1
                child.kill()
                child.start()

    def kill_worker(self) -> None:
        worker = self.rng.choice(self.cluster.workers)
        self.faults.kills.append(time.time())
        self.faults.victims.append(worker.name)
        worker.kill()
        worker.start()

    async def restart_redis(self) -> None:
        server = self.cluster.redis
        if server is None:
            return
        at = time.time()
        server.kill()
        say("redis-server killed")
        await asyncio.sleep(1.0)
        server.start()
        await asyncio.to_thread(server.wait_ready)
        self.faults.redis_restarts.append((at, time.time() - at))
        say(f"redis-server back after {time.time() - at:.1f} s (empty)")

    async def terminate_pg(self) -> None:
        at = time.time()
        count = await self.cluster.db.terminate_backends()
        self.faults.pg_terminations.append((at, count))
        say(f"terminated {count} PostgreSQL backends")

    async def kill_api(self) -> None:
        """SIGKILL the API holding the most live subscriptions (waiting up to 20 s for some)."""
        apis = self.cluster.apis
        began = time.monotonic()
        while True:
            counts = [attached_to(self.followers, i) for i in range(len(apis))]
            waited = time.monotonic() - began
            if max(counts) >= 2 or (max(counts) >= 1 and waited > 10) or waited > 20:
                break
            await asyncio.sleep(0.1)
        victim = max(range(len(apis)), key=lambda i: counts[i])
        api: Api = apis[victim]
        at = time.time()
        self.down.add(api.name)
        try:
            api.kill()
            self.faults.api_kills.append((at, victim, counts[victim]))
            say(f"{api.name} killed with {counts[victim]} subscribers attached")
            await asyncio.sleep(1.0)
            api.start()
        finally:
            self.down.discard(api.name)
        await asyncio.to_thread(api.wait_healthy)
        say(f"{api.name} back after {time.time() - at:.1f} s")


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


@dataclass
class Outcome:
    started: dict[int, Started]
    followers: list[Follower]
    faults: Faults
    start_failures: dict[str, int]
    settled: bool
    extras: Extras


async def drive(cluster: Cluster, plan: Plan) -> Outcome:
    client = Client([api.url for api in cluster.apis])
    progress = Progress(pg_dsn(cluster.db.url))
    followers: list[Follower] = []
    injector = Injector(cluster, plan, followers)
    tasks: set[asyncio.Task[None]] = set()
    started: dict[int, Started] = {}
    extras = Extras(client)
    try:
        await client.setup(cluster.sink_url)
        await extras.setup()
        t0 = time.monotonic()
        deadline = t0 + plan.timeout
        followed = plan.followed(len(client.urls))

        async def start(index: int) -> None:
            await _sleep_until(t0 + plan.start_at(index))
            run = await client.start_run(index, deadline)
            if run is None:
                return
            started[index] = run
            if index in followed:
                follower = Follower(run.run_id, index, prefer=followed[index])
                followers.append(follower)
                follow = follower.follow(client.urls, client.token, deadline + SUBSCRIBER_GRACE)
                _spawn(tasks, follow)

        starters = [asyncio.create_task(start(i)) for i in range(plan.runs)]
        starters += _extra_tasks(extras, plan, t0, deadline)
        faults = asyncio.create_task(injector.run(t0, deadline))
        settled = await _settle(progress, plan, t0, deadline, starters, faults, injector)
        faults.cancel()
        for task in starters:
            task.cancel()
        await _wait_followers(followers, tasks)
        return Outcome(started, followers, injector.faults, client.start_failures, settled, extras)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await progress.close()
        await client.aclose()


def _extra_tasks(
    extras: Extras, plan: Plan, t0: float, deadline: float
) -> list[asyncio.Task[None]]:
    """Approval runs spread over the window (and their resolver); the cron workflow's delete
    at its end. Each is a starter: the run settles only after they are done."""
    count = max(1, plan.runs // 10)
    all_started = asyncio.Event()

    async def approval(index: int) -> None:
        await _sleep_until(t0 + index * plan.spread / count)
        await extras.start_approval(index, deadline)

    async def approvals() -> None:
        await asyncio.gather(*(approval(i) for i in range(count)))
        all_started.set()

    async def end_cron() -> None:
        await _sleep_until(t0 + plan.spread)
        await extras.delete_cron(deadline)

    return [
        asyncio.create_task(approvals()),
        asyncio.create_task(extras.resolve_loop(deadline, all_started)),
        asyncio.create_task(end_cron()),
    ]


def _spawn(tasks: set[asyncio.Task[None]], coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _settle(
    progress: Progress,
    plan: Plan,
    t0: float,
    deadline: float,
    starters: list[asyncio.Task[None]],
    faults: asyncio.Task[None],
    injector: Injector,
) -> bool:
    """Wait for starts and faults to finish and every run to be terminal, or the deadline."""
    last_report = 0.0
    while True:
        now = time.monotonic()
        await progress.poll()
        starting = sum(1 for task in starters if not task.done())
        if faults.done() and (exc := faults.exception()) is not None:
            raise exc
        done = not starting and faults.done() and progress.terminal >= progress.total
        if now - last_report >= 5 or done:
            last_report = now
            say(
                f"t={now - t0:5.1f}s runs {progress.total} started, {progress.terminal} ended, "
                f"{progress.completed} completed; kills {len(injector.faults.kills)}"
                f"{'' if faults.done() else ' (faults on)'}"
            )
        if done:
            return True
        if now >= deadline:
            say("deadline reached")
            return False
        await asyncio.sleep(0.5)


async def _wait_followers(followers: list[Follower], tasks: set[asyncio.Task[None]]) -> None:
    """Give live subscribers a moment to receive the terminal events."""
    until = time.monotonic() + SUBSCRIBER_GRACE
    while tasks and time.monotonic() < until:
        if all(f.terminal for f in followers):
            break
        await asyncio.sleep(0.2)
