"""``/metrics``: values move as runs execute, on real servers and real worker processes.

Two stacks: embedded (one process counts everything) and production topology (an API process
and a ``treadle worker --processes 2`` whose parent serves both children's sum on its own
port). Each stack is this module's own, so the counts are exact.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_settings
from tests.e2e.conftest import Account, register
from tests.fakes import serve_app
from tests.fakes.sink import Sink
from tests.support.client import RestApi
from tests.support.live import LiveServer, WorkerProcess
from tests.support.services import PG_URL, create_pg_database, drop_pg_database
from treadle.migrate import upgrade

TOKEN = "metrics-token-" + "m" * 24
ALLOWED_LABELS = {"tenant", "type", "status", "outcome", "le"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
Samples = Counter[tuple[str, frozenset[tuple[str, str]]]]


@dataclass
class Stack:
    api: str
    targets: list[str]  # every /metrics URL that makes up the whole (Prometheus sums them)
    token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    response = httpx.get(url, headers=headers or {}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = Counter()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] += sample.value
    return samples


def scrape_all(stack: Stack) -> Samples:
    total: Samples = Counter()
    for url in stack.targets:
        total.update(scrape(url, stack.headers))
    return total


def value(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and want <= got)


def wait_worker_metrics(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("worker metrics port never answered")


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[Sink, str]]:
    recorder = Sink()
    with serve_app(recorder.app) as url:
        yield recorder, url


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    data = Path(tmp_path_factory.mktemp("metrics"))
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{data / 'metrics.db'}"
        upgrade(url)
        with LiveServer.embedded(make_settings(url, data)) as server:
            yield Stack(server.base_url, [f"{server.base_url}/metrics"])
        return
    port = free_port()
    settings = make_settings(
        request.getfixturevalue("private_pg_url"),
        data,
        redis_url=request.getfixturevalue("redis_url"),
        treadle_lease_seconds=3.0,
        treadle_reaper_interval_seconds=0.5,
        treadle_metrics_token=TOKEN,
        treadle_worker_metrics_port=port,
    )
    headers = {"Authorization": f"Bearer {TOKEN}"}
    worker_url = f"http://127.0.0.1:{port}/metrics"
    with (
        LiveServer.api(settings) as server,
        WorkerProcess(settings, args=["--processes", "2"]),
    ):
        wait_worker_metrics(worker_url, headers)
        yield Stack(server.base_url, [f"{server.base_url}/metrics", worker_url], TOKEN, headers)


def wait_run(api: RestApi, token: str, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run = api.call("GET", f"/api/runs/{run_id}", token)
        if run["status"] in TERMINAL or time.monotonic() > deadline:
            return dict(run)
        time.sleep(0.05)


def _workflow(api: RestApi, account: Account, sink_url: str, path: str) -> str:
    nodes = [
        {
            "id": "call",
            "type": "HTTP_REQUEST",
            "config": {"method": "POST", "url": f"{sink_url}{path}"},
            "retry": {"maxAttempts": 3, "backoffSeconds": 0.2},
        },
        {"id": "shape", "type": "TRANSFORM", "config": {"output": {"ok": True}}},
    ]
    definition = {"nodes": nodes, "edges": [{"from": "call", "to": "shape"}]}
    body = api.call(
        "POST", "/api/workflows", account.token, json={"name": "m", "definition": definition}
    )
    return str(body["id"])


def test_metrics_move_as_runs_execute(stack: Stack, sink: tuple[Sink, str]) -> None:
    recorder, sink_url = sink
    with RestApi(stack.api) as api:
        alice = register(api, "Metrics")
        tenant = alice.tenant["id"]
        ok_path, bad_path = f"/ok-{uuid.uuid4().hex}", f"/bad-{uuid.uuid4().hex}"
        recorder.script(ok_path, 503)  # the first call of all retries once
        recorder.script(bad_path, 400)  # fails at once
        good, bad = (
            _workflow(api, alice, sink_url, ok_path),
            _workflow(api, alice, sink_url, bad_path),
        )
        before = scrape_all(stack)
        run_ids = [
            api.call("POST", f"/api/workflows/{wf}/execute", alice.token, json={})["id"]
            for wf in (good, good, good, bad)
        ]
        runs = [wait_run(api, alice.token, run_id) for run_id in run_ids]
        assert [r["status"] for r in runs] == ["COMPLETED"] * 3 + ["FAILED"]
        after = _settled(stack, tenant)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("treadle_runs_started_total", tenant=tenant) == 4
    assert delta("treadle_runs_finished_total", tenant=tenant, status="COMPLETED") == 3
    assert delta("treadle_runs_finished_total", tenant=tenant, status="FAILED") == 1
    steps = "treadle_steps_finished_total"
    assert delta(steps, tenant=tenant, type="HTTP_REQUEST", status="COMPLETED") == 3
    assert delta(steps, tenant=tenant, type="HTTP_REQUEST", status="FAILED") == 1
    assert delta(steps, tenant=tenant, type="TRANSFORM", status="COMPLETED") == 3
    assert delta(steps, tenant=tenant, type="TRANSFORM", status="CANCELLED") == 1
    assert delta("treadle_step_retries_total", tenant=tenant, type="HTTP_REQUEST") == 1
    # 5 HTTP attempts: 3 succeeded, 1 retried, 1 failed for good; every one claimed off a queue.
    duration = "treadle_step_duration_seconds_count"
    assert delta(duration, type="HTTP_REQUEST", outcome="succeeded") == 3
    assert delta(duration, type="HTTP_REQUEST", outcome="failed") == 2
    assert delta("treadle_step_duration_seconds_sum", type="HTTP_REQUEST") > 0
    assert delta("treadle_queue_lag_seconds_count", type="HTTP_REQUEST") == 5
    assert delta("treadle_lease_expiries_total", tenant=tenant) == 0
    _assert_low_cardinality(after, runs)


def _settled(stack: Stack, tenant: str) -> Samples:
    """Scrape until the last run's finish is counted (the worker counts after its commit)."""
    deadline = time.monotonic() + 10
    while True:
        samples = scrape_all(stack)
        done = value(samples, "treadle_runs_finished_total", tenant=tenant)
        if done >= 4 or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


def _assert_low_cardinality(samples: Samples, runs: list[dict[str, Any]]) -> None:
    ids = {r["id"] for r in runs} | {s["id"] for r in runs for s in r["steps"]}
    ids |= {s["nodeId"] for r in runs for s in r["steps"]}
    for name, labels in samples:
        if name.startswith("treadle_"):
            assert {k for k, _ in labels} <= ALLOWED_LABELS, (name, labels)
            assert not ids & {v for _, v in labels}, (name, labels)


def test_live_subscribers_gauge(stack: Stack) -> None:
    with RestApi(stack.api) as api:
        alice = register(api, "Watcher")
        definition = {"nodes": [{"id": "nap", "type": "DELAY", "config": {"seconds": 30}}]}
        body = {"name": "nap", "definition": {**definition, "edges": []}}
        workflow = api.call("POST", "/api/workflows", alice.token, json=body)
        run = api.call("POST", f"/api/workflows/{workflow['id']}/execute", alice.token, json={})
        api_metrics = f"{stack.api}/metrics"
        gauge = "treadle_live_subscribers"
        assert value(scrape(api_metrics, stack.headers), gauge) == 0
        url = f"{stack.api}/api/runs/{run['id']}/stream"
        auth = {"Authorization": f"Bearer {alice.token}"}
        with httpx.stream("GET", url, headers=auth, timeout=30) as response:
            lines = response.iter_lines()  # kept: a dropped iterator closes the stream
            assert next(lines) == "id: 1"  # attached: the replay has begun
            assert value(scrape(api_metrics, stack.headers), gauge) == 1
        api.call("POST", f"/api/runs/{run['id']}/cancel", alice.token)
        deadline = time.monotonic() + 10
        while value(scrape(api_metrics, stack.headers), gauge) != 0:
            assert time.monotonic() < deadline, "subscriber never went away"
            time.sleep(0.1)


def test_the_token_rule_outside_production(stack: Stack) -> None:
    """Development: open without a token; with one set, every target requires it."""
    for url in stack.targets:
        if stack.token is None:
            assert httpx.get(url, timeout=10).status_code == 200
            continue
        assert httpx.get(url, timeout=10).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(url, headers=wrong, timeout=10).status_code == 401
        assert httpx.get(url, headers=stack.headers, timeout=10).status_code == 200


@pytest.fixture
def lone_pg_url(pg_url: str) -> Iterator[str]:
    """A database of this test's own: no other worker's reaper may reclaim its step."""
    assert PG_URL is not None  # pg_url already required it
    url = asyncio.run(create_pg_database(PG_URL, f"treadle_lease_{os.getpid()}"))
    upgrade(url)
    yield url
    asyncio.run(drop_pg_database(PG_URL, url))


def test_a_lease_expiry_is_counted_by_the_worker_that_recovers_it(
    lone_pg_url: str,
    redis_url: str,
    sink: tuple[Sink, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorder, sink_url = sink
    first = make_settings(
        lone_pg_url,
        tmp_path,
        redis_url=redis_url,
        treadle_lease_seconds=2.0,
        treadle_reaper_interval_seconds=0.5,
        treadle_worker_metrics_port=free_port(),
    )
    second = first.model_copy(update={"treadle_worker_metrics_port": free_port()})
    path = f"/slow/lease-{uuid.uuid4().hex[:8]}"
    nodes = [{"id": "slow", "type": "HTTP_REQUEST", "config": {"url": f"{sink_url}{path}?ms=3000"}}]
    with LiveServer.api(first) as server, RestApi(server.base_url) as api:
        alice = register(api, "Lease")
        body = {"name": "slow", "definition": {"nodes": nodes, "edges": []}}
        workflow = api.call("POST", "/api/workflows", alice.token, json=body)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(_mkdir(tmp_path / "mp-first")))
        with WorkerProcess(first) as doomed:
            run = api.call("POST", f"/api/workflows/{workflow['id']}/execute", alice.token)
            _wait_for(lambda: any(r.path == path for r in list(recorder.requests)))
            doomed.signal(signal.SIGKILL)  # mid-call: the attempt's lease will run out
            doomed.wait(timeout=10)
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(_mkdir(tmp_path / "mp-second")))
        with WorkerProcess(second):
            done = wait_run(api, alice.token, run["id"])
            assert done["status"] == "COMPLETED", done
            url = f"http://127.0.0.1:{second.treadle_worker_metrics_port}/metrics"
            samples = scrape(url)
    tenant = alice.tenant["id"]
    assert value(samples, "treadle_lease_expiries_total", tenant=tenant) == 1
    assert value(samples, "treadle_step_retries_total", tenant=tenant, type="HTTP_REQUEST") == 1
    assert value(samples, "treadle_runs_finished_total", tenant=tenant, status="COMPLETED") == 1


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _wait_for(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Two production servers: one without a metrics token, one with."""
    data = Path(tmp_path_factory.mktemp("prod-metrics"))
    url = f"sqlite+aiosqlite:///{data / 'prod.db'}"
    upgrade(url)
    closed = make_settings(url, data / "a", treadle_env="production")
    guarded = make_settings(url, data / "b", treadle_env="production", treadle_metrics_token=TOKEN)
    with LiveServer.embedded(closed) as no_token, LiveServer.embedded(guarded) as with_token:
        yield no_token.base_url, with_token.base_url


def test_production_needs_the_token(production: tuple[str, str]) -> None:
    no_token, with_token = production
    response = httpx.get(f"{no_token}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NOT_FOUND"
    assert httpx.get(f"{with_token}/metrics").status_code == 401
    wrong = httpx.get(f"{with_token}/metrics", headers={"Authorization": "Bearer x" + TOKEN})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "UNAUTHENTICATED"
    ok = httpx.get(f"{with_token}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert "treadle_live_subscribers" in ok.text
