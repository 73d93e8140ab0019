"""Real ``treadle worker`` processes on PostgreSQL + Redis, killed and restarted for real.

Each test has its own queue, API server and workers, so a kill never disturbs another test.
Leases are 3 s and the reaper runs every 0.5 s, so a dead worker's step is reclaimed in seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import redis
from sqlalchemy.engine import make_url

from tests.conftest import make_settings
from tests.fakes import serve_app
from tests.fakes.sink import Recorded, Sink
from tests.support.client import RestApi, unique_email
from tests.support.live import LiveServer, WorkerProcess
from treadle.queue import StepRef
from treadle.services.execution import advance_step
from treadle.settings import Settings
from treadle.tasks.broker import open_runtime

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

LEASE_SECONDS = 3.0
# Longer than TREADLE_DISPATCH_GRACE_SECONDS (10 s) plus a lease: a lost queue message delays a
# step until the reaper resends it, which is recovery, not failure.
WAIT = 45.0
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
PASSWORD = "correct horse battery"

T = TypeVar("T")


# --- helpers -------------------------------------------------------------------------------


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def assert_gap_free(events: Sequence[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), events
    assert events[0]["type"] == "RUN_CREATED"


def of_node(events: Sequence[dict[str, Any]], type_: str, node: str) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == type_ and e["nodeId"] == node]


def http_node(node_id: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "HTTP_REQUEST", "config": {"url": url}, **extra}


def transform(node_id: str, output: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "TRANSFORM", "config": {"output": output}}


def chain(*node_ids: str) -> list[dict[str, str]]:
    return [{"from": a, "to": b} for a, b in itertools.pairwise(node_ids)]


def sink_keys(recorder: Sink, run_id: str) -> list[str]:
    """Idempotency-Key of every request the sink saw for ``run_id``, in arrival order."""
    return [
        key
        for r in list(recorder.requests)
        if (key := r.headers.get("idempotency-key", "")).startswith(f"{run_id}:")
    ]


def sink_requests(recorder: Sink, run_id: str) -> list[Recorded]:
    prefix = f"{run_id}:"
    return [
        r
        for r in list(recorder.requests)
        if r.headers.get("idempotency-key", "").startswith(prefix)
    ]


def _pg_dsn(settings: Settings) -> str:
    url = make_url(settings.database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def db_fetch(settings: Settings, sql: str, *args: object) -> list[dict[str, Any]]:
    """Rows of one query straight from PostgreSQL (what the workers see, no API in between)."""

    async def main() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(_pg_dsn(settings))
        try:
            return [dict(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(main())


def step_rows(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    return db_fetch(
        settings,
        "SELECT * FROM workflow_steps WHERE run_id = $1 ORDER BY node_id",
        uuid.UUID(run_id),
    )


def run_row(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    return db_fetch(settings, "SELECT * FROM workflow_runs WHERE id = $1", uuid.UUID(run_id))


def event_rows(settings: Settings, run_id: str) -> list[dict[str, Any]]:
    return db_fetch(
        settings,
        "SELECT * FROM workflow_events WHERE run_id = $1 ORDER BY seq",
        uuid.UUID(run_id),
    )


# --- one isolated deployment per test ------------------------------------------------------


@dataclass
class Cluster:
    """An API server and any number of real worker processes on one private queue."""

    settings: Settings
    api: RestApi
    token: str
    tenant_id: uuid.UUID
    logs: Path
    workers: list[WorkerProcess] = field(default_factory=list)

    def worker(self) -> WorkerProcess:
        log = self.logs / f"worker-{len(self.workers)}.log"
        process = WorkerProcess(self.settings, log=log).start()
        self.workers.append(process)
        return process

    def log_tail(self, lines: int = 40) -> str:
        parts = []
        for path in sorted(self.logs.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)

    def wait_until(
        self,
        what: str,
        probe: Callable[[], T | None],
        timeout: float,
        state: Callable[[], object] = lambda: None,
    ) -> T:
        """Poll ``probe`` until it returns something truthy; fail with ``state()`` and logs."""
        deadline = time.monotonic() + timeout
        while True:
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out ({timeout}s) waiting for {what}: {state()}\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def flow(self, nodes: list[dict[str, Any]], edges: list[dict[str, Any]] | None = None) -> str:
        definition = {"nodes": nodes, "edges": edges or []}
        body = self.api.create_workflow(self.token, name="Workers", definition=definition)
        return str(body["id"])

    def execute(self, workflow_id: str, input_: dict[str, Any] | None = None) -> str:
        return str(self.api.execute(self.token, workflow_id, input_ or {})["id"])

    def ref(self, run_id: str, step_id: str) -> StepRef:
        """What a ``treadle.run_step`` message names: the step, its run and its tenant."""
        return StepRef(uuid.UUID(step_id), uuid.UUID(run_id), self.tenant_id)

    def run(self, run_id: str) -> dict[str, Any]:
        return dict(self.api.get_run(self.token, run_id))

    def step(self, run_id: str, node: str) -> dict[str, Any]:
        return next(s for s in self.run(run_id)["steps"] if s["nodeId"] == node)

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.api.events(self.token, run_id, limit=1000))

    def wait_run(self, run_id: str, timeout: float = WAIT) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["status"] in TERMINAL else None

        return self.wait_until(f"run {run_id} to finish", finished, timeout)

    def wait_step(self, run_id: str, node: str, status: str, timeout: float = WAIT) -> None:
        self.wait_until(
            f"step {node} to be {status}",
            lambda: self.step(run_id, node)["status"] == status,
            timeout,
            lambda: (self.run(run_id), step_rows(self.settings, run_id)),
        )


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[Sink, str]]:
    recorder = Sink()
    with serve_app(recorder.app) as url:
        yield recorder, url


@pytest.fixture
def cluster(private_pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    settings = make_settings(
        private_pg_url,
        tmp_path,
        redis_url=redis_url,
        treadle_lease_seconds=LEASE_SECONDS,
        treadle_reaper_interval_seconds=0.5,
        treadle_queue_name=f"treadle:workers:{uuid.uuid4().hex[:12]}",
        log_level="info",
    )
    with LiveServer.api(settings) as server:
        api = RestApi(server.base_url)
        account = api.register("Workers", unique_email("workers"), PASSWORD, "Worker Tester")
        tenant_id = uuid.UUID(account["tenant"]["id"])
        deployment = Cluster(settings, api, account["token"], tenant_id, tmp_path)
        try:
            yield deployment
        finally:
            for process in deployment.workers:
                process.stop()
            api.http.close()


# --- a. SIGKILL mid-step -------------------------------------------------------------------


def test_sigkill_mid_step_is_retried_by_a_new_worker(
    cluster: Cluster, sink: tuple[Sink, str]
) -> None:
    recorder, url = sink
    retry = {"maxAttempts": 4, "backoffSeconds": 0.2}
    nodes = [http_node("call", f"{url}/slow/kill?ms=5000", retry=retry)]
    first = cluster.worker()
    run_id = cluster.execute(cluster.flow(nodes))
    cluster.wait_step(run_id, "call", "RUNNING")
    cluster.wait_until("the sink to see attempt 1", lambda: sink_keys(recorder, run_id), 15)

    first.signal(signal.SIGKILL)  # the whole process group: supervisor and child
    assert first.wait(timeout=10) == -signal.SIGKILL
    cluster.worker()

    run = cluster.wait_run(run_id, timeout=30)
    assert run["status"] == "COMPLETED", (run, cluster.log_tail())
    step = run["steps"][0]
    assert step["status"] == "COMPLETED"
    assert step["attempt"] >= 2
    assert step["output"]["status"] == 200
    events = cluster.events(run_id)
    assert_gap_free(events)
    lost = of_node(events, "STEP_RETRYING", "call")
    assert lost, [(e["type"], e["nodeId"], e["data"]) for e in events]
    assert lost[0]["data"]["error"]["code"] == "WORKER_LOST"
    assert lost[0]["data"]["attempt"] == 1
    started = [e["data"]["attempt"] for e in of_node(events, "STEP_STARTED", "call")]
    assert started == list(range(1, step["attempt"] + 1))
    assert [e["type"] for e in events].count("RUN_COMPLETED") == 1
    assert sink_keys(recorder, run_id)[:2] == [f"{run_id}:call:1", f"{run_id}:call:2"]


# --- b. SIGTERM drains ---------------------------------------------------------------------


def test_sigterm_finishes_the_step_in_flight_and_exits_0(
    cluster: Cluster, sink: tuple[Sink, str]
) -> None:
    recorder, url = sink
    nodes = [
        http_node("call", f"{url}/slow/term?ms=3000"),
        transform("after", {"status": "{{ steps.call.output.status }}"}),
    ]
    worker = cluster.worker()
    run_id = cluster.execute(cluster.flow(nodes, chain("call", "after")))
    cluster.wait_step(run_id, "call", "RUNNING")
    cluster.wait_until("the sink to see the call", lambda: sink_keys(recorder, run_id), 15)

    worker.signal(signal.SIGTERM)
    code = worker.wait(timeout=30)
    assert code == 0, f"treadle worker exited {code} on SIGTERM\n{cluster.log_tail()}"
    # The draining worker finished its attempt rather than abandoning it to a lease expiry.
    call = cluster.step(run_id, "call")
    assert (call["status"], call["attempt"]) == ("COMPLETED", 1)

    cluster.worker()  # picks up what the drained worker dispatched but no longer fetched
    run = cluster.wait_run(run_id)
    assert run["status"] == "COMPLETED", (run, cluster.log_tail())
    assert run["output"] == {"after": {"status": 200}}
    events = cluster.events(run_id)
    assert_gap_free(events)
    assert not [e for e in events if e["type"] == "STEP_RETRYING"]
    assert sink_keys(recorder, run_id) == [f"{run_id}:call:1"]


# --- c. duplicate delivery -----------------------------------------------------------------


def _stream_drained(settings: Settings) -> bool:
    """Every message of the queue was delivered to the group and acknowledged."""
    client = redis.Redis.from_url(str(settings.redis_url))
    try:
        stream = client.xinfo_stream(settings.treadle_queue_name)
        groups = client.xinfo_groups(settings.treadle_queue_name)
    except redis.ResponseError:  # no such stream (yet, or flushed by another test session)
        return False
    finally:
        client.close()
    group = next(g for g in groups if g["name"].decode() == settings.treadle_queue_name)
    return bool(group["pending"] == 0 and group["last-delivered-id"] == stream["last-generated-id"])


async def _redeliver(settings: Settings, refs: list[StepRef]) -> None:
    """Kick every step again through the broker, and advance each here, some concurrently.

    In-process calls take both paths: with the message's ref, and looking the step up.
    """
    async with open_runtime(settings) as resources:
        await resources.queue.enqueue(refs)
        await resources.queue.enqueue(refs)
        for ref in refs:
            await advance_step(resources, ref.step_id)
            await advance_step(resources, ref.step_id, ref=ref)
        await asyncio.gather(
            *(advance_step(resources, r.step_id, ref=r) for r in refs for _ in range(3))
        )


def test_duplicate_deliveries_after_completion_change_nothing(
    cluster: Cluster, sink: tuple[Sink, str]
) -> None:
    recorder, url = sink
    nodes = [
        transform("a", {"n": "{{ input.n }}"}),
        http_node("call", f"{url}/dup"),
        {"id": "pause", "type": "DELAY", "config": {"seconds": 1}},
    ]
    cluster.worker()
    run_id = cluster.execute(cluster.flow(nodes, chain("a", "call", "pause")), {"n": 1})
    run = cluster.wait_run(run_id)
    assert run["status"] == "COMPLETED", (run, cluster.log_tail())
    cluster.wait_until("the queue to drain", lambda: _stream_drained(cluster.settings), 15)
    events_before = event_rows(cluster.settings, run_id)
    rows_before = step_rows(cluster.settings, run_id)
    run_before = run_row(cluster.settings, run_id)

    refs = [cluster.ref(run_id, s["id"]) for s in run["steps"]]
    asyncio.run(_redeliver(cluster.settings, refs))
    cluster.wait_until(
        "the worker to take the duplicates", lambda: _stream_drained(cluster.settings), 15
    )

    assert event_rows(cluster.settings, run_id) == events_before
    assert step_rows(cluster.settings, run_id) == rows_before
    assert run_row(cluster.settings, run_id) == run_before
    assert sink_keys(recorder, run_id) == [f"{run_id}:call:1"]


async def _race(settings: Settings, ref: StepRef, contenders: int) -> None:
    """``contenders`` deliveries of one step at once, half carrying the ref, half looking it up."""
    async with open_runtime(settings) as resources:
        await asyncio.gather(
            *(
                advance_step(resources, ref.step_id, ref=ref if i % 2 else None)
                for i in range(contenders)
            )
        )


def test_concurrent_deliveries_of_a_ready_step_start_it_once(
    cluster: Cluster, sink: tuple[Sink, str]
) -> None:
    # No worker process: this test process is the only one advancing steps. "a" runs inside
    # its claiming transaction (inline); "call" is claimed, run outside it, then recorded.
    recorder, url = sink
    nodes = [
        transform("a", {"n": 1}),
        http_node("call", f"{url}/race?n={{{{ steps.a.output.n }}}}"),
    ]
    run_id = cluster.execute(cluster.flow(nodes, chain("a", "call")))
    refs = {s["nodeId"]: cluster.ref(run_id, s["id"]) for s in cluster.run(run_id)["steps"]}

    asyncio.run(_race(cluster.settings, refs["a"], contenders=6))
    assert cluster.step(run_id, "a")["status"] == "COMPLETED"
    asyncio.run(_race(cluster.settings, refs["call"], contenders=6))

    run = cluster.run(run_id)
    assert run["status"] == "COMPLETED", run
    assert run["output"]["call"]["status"] == 200
    assert [s["attempt"] for s in run["steps"]] == [1, 1]
    assert sink_keys(recorder, run_id) == [f"{run_id}:call:1"]
    events = cluster.events(run_id)
    assert_gap_free(events)
    assert [(e["type"], e["nodeId"]) for e in events] == [
        ("RUN_CREATED", None),
        ("RUN_STARTED", None),
        ("STEP_STARTED", "a"),
        ("STEP_COMPLETED", "a"),
        ("STEP_STARTED", "call"),
        ("STEP_COMPLETED", "call"),
        ("RUN_COMPLETED", None),
    ]


# --- d. load on two workers ----------------------------------------------------------------

RUNS = 200


def test_two_hundred_concurrent_runs_on_two_workers(cluster: Cluster) -> None:
    nodes = [
        transform("a", {"n": "{{ input.n }}"}),
        transform("b", {"n": "{{ steps.a.output.n + 1 }}"}),
        transform("c", {"n": "{{ steps.b.output.n * 2 }}"}),
    ]
    workflow_id = cluster.flow(nodes, chain("a", "b", "c"))
    cluster.worker()
    cluster.worker()
    base_url = str(cluster.api.http.base_url)

    def start(batch: range) -> list[str]:
        api = RestApi(base_url)
        try:
            return [str(api.execute(cluster.token, workflow_id, {"n": n})["id"]) for n in batch]
        finally:
            api.http.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        batches = [range(i, RUNS, 8) for i in range(8)]
        run_ids = [run_id for ids in pool.map(start, batches) for run_id in ids]
    assert len(set(run_ids)) == RUNS

    def settled() -> bool:
        done = {
            status: cluster.api.list_runs(cluster.token, workflow_id, status)["total"]
            for status in TERMINAL
        }
        return sum(done.values()) == RUNS

    cluster.wait_until(f"{RUNS} runs to finish", settled, timeout=60)

    runs = db_fetch(
        cluster.settings,
        "SELECT id, status, input, output FROM workflow_runs WHERE workflow_id = $1",
        uuid.UUID(workflow_id),
    )
    assert Counter(r["status"] for r in runs) == {"COMPLETED": RUNS}
    for r in runs:
        n = json.loads(r["input"])["n"]
        assert json.loads(r["output"]) == {"c": {"n": (n + 1) * 2}}
    events = db_fetch(
        cluster.settings,
        "SELECT run_id, seq, type, node_id FROM workflow_events WHERE run_id = ANY($1::uuid[]) "
        "ORDER BY run_id, seq",
        [uuid.UUID(r) for r in run_ids],
    )
    per_run: dict[uuid.UUID, list[dict[str, Any]]] = {}
    for e in events:
        per_run.setdefault(e["run_id"], []).append(e)
    assert len(per_run) == RUNS
    expected = [
        ("RUN_CREATED", None),
        ("RUN_STARTED", None),
        ("STEP_STARTED", "a"),
        ("STEP_COMPLETED", "a"),
        ("STEP_STARTED", "b"),
        ("STEP_COMPLETED", "b"),
        ("STEP_STARTED", "c"),
        ("STEP_COMPLETED", "c"),
        ("RUN_COMPLETED", None),
    ]
    for run_events in per_run.values():
        assert [e["seq"] for e in run_events] == list(range(1, len(expected) + 1))
        assert [(e["type"], e["node_id"]) for e in run_events] == expected


# --- e. delays survive restarts ------------------------------------------------------------


def test_delay_survives_killing_every_worker(cluster: Cluster) -> None:
    nodes = [
        {"id": "wait", "type": "DELAY", "config": {"seconds": 3}},
        transform("after", {"waited": "{{ steps.wait.output.waitedUntil }}"}),
    ]
    worker = cluster.worker()
    run_id = cluster.execute(cluster.flow(nodes, chain("wait", "after")))

    def sleeping() -> dict[str, Any] | None:
        row = next(r for r in step_rows(cluster.settings, run_id) if r["node_id"] == "wait")
        return row if row["status"] == "RUNNING" and row["wake_at"] is not None else None

    row = cluster.wait_until("the delay to start sleeping", sleeping, 15)
    slept_at = time.monotonic()
    worker.signal(signal.SIGKILL)
    assert worker.wait(timeout=10) == -signal.SIGKILL
    assert row["lease_until"] is None  # a sleeping delay holds no worker
    time.sleep(max(0.0, 4.0 - (time.monotonic() - slept_at)))
    assert cluster.step(run_id, "wait")["status"] == "RUNNING"  # nobody woke it meanwhile

    restarted = time.time()
    cluster.worker()
    run = cluster.wait_run(run_id, timeout=30)
    assert run["status"] == "COMPLETED", (run, cluster.log_tail())
    wait = next(s for s in run["steps"] if s["nodeId"] == "wait")
    assert wait["attempt"] == 1
    assert ts(wait["output"]["waitedUntil"]) == row["wake_at"]
    events = cluster.events(run_id)
    assert_gap_free(events)
    assert len(of_node(events, "STEP_STARTED", "wait")) == 1
    assert not of_node(events, "STEP_RETRYING", "wait")
    [completed] = of_node(events, "STEP_COMPLETED", "wait")
    assert ts(completed["createdAt"]).timestamp() >= restarted
    assert ts(completed["createdAt"]) >= row["wake_at"]


# --- f. retry backoff ----------------------------------------------------------------------


def test_retries_wait_their_backoff(cluster: Cluster, sink: tuple[Sink, str]) -> None:
    recorder, url = sink
    path = f"/flaky-{uuid.uuid4().hex[:8]}"
    recorder.script(path, 503, 503, 200)
    nodes = [http_node("call", f"{url}{path}", retry={"maxAttempts": 3, "backoffSeconds": 0.5})]
    cluster.worker()
    run_id = cluster.execute(cluster.flow(nodes))
    run = cluster.wait_run(run_id)
    assert run["status"] == "COMPLETED", (run, cluster.log_tail())
    assert run["steps"][0]["attempt"] == 3

    events = cluster.events(run_id)
    assert_gap_free(events)
    started = of_node(events, "STEP_STARTED", "call")
    retrying = of_node(events, "STEP_RETRYING", "call")
    assert [e["data"]["attempt"] for e in started] == [1, 2, 3]
    assert [e["data"]["attempt"] for e in retrying] == [1, 2]
    for failure, next_start, backoff in zip(retrying, started[1:], (0.5, 1.0), strict=True):
        failed_at, retry_at = ts(failure["createdAt"]), ts(failure["data"]["retryAt"])
        started_at = ts(next_start["createdAt"])
        assert abs((retry_at - failed_at).total_seconds() - backoff) < 0.05
        assert started_at >= retry_at
        assert backoff - 0.01 <= (started_at - failed_at).total_seconds() < backoff + 3

    arrivals = [r.at for r in sink_requests(recorder, run_id)]
    assert len(arrivals) == 3
    assert arrivals[1] - arrivals[0] >= 0.5
    assert arrivals[2] - arrivals[1] >= 1.0
