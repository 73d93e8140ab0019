"""Secrets never reach a log line: every process's real output, read whole.

A real ``treadle serve`` (access log on, level info) and a real ``treadle worker`` run on
PostgreSQL + Redis with their stdout and stderr in files. Requests carry a password, JWTs (in
``Authorization`` and as ``?token=`` on the SSE stream and the websocket), a webhook secret, an
``Authorization`` header of a step that fails, and a key next to output PostgreSQL cannot store
(its statement fails: the error must not quote parameters). Afterwards no secret appears in
either output, and every line is JSON from the scrubbing formatter (uvicorn's and taskiq's too).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET, make_settings
from tests.fakes import serve_app
from tests.fakes.sink import Sink
from tests.support.client import unique_email
from tests.support.live import ApiProcess, WorkerProcess
from tests.support.ws import GraphQLWs
from treadle.settings import Settings

HOOK_SECRET = "canary-hook-secret-0a9d"


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[Sink, str]]:
    recorder = Sink()
    with serve_app(recorder.app) as url:
        yield recorder, url


PASSWORD_CANARY = "canary-password-31f4e"
AUTH_CANARY = "canary-failing-auth-8d1c"
OUTPUT_CANARY = "canary-unstorable-output-2b7a"
STEP_TIMEOUT = 60


def _processes_definition(sink_url: str) -> dict[str, Any]:
    once = {"maxAttempts": 1}
    return {
        "nodes": [
            {
                "id": "hook",
                "type": "WEBHOOK",
                "config": {"url": f"{sink_url}/proc/hook", "secret": HOOK_SECRET},
            },
            {  # fails at once (nothing listens on port 9), carrying an Authorization header
                "id": "refused",
                "type": "HTTP_REQUEST",
                "config": {
                    "url": "http://127.0.0.1:9/x",
                    "headers": {"Authorization": f"Bearer {AUTH_CANARY}"},
                },
                "retry": once,
            },
        ],
        "edges": [{"from": "hook", "to": "refused"}],
    }


# Output PostgreSQL cannot store (a NUL) next to a secret: the statement that records it fails,
# and its error must not quote the parameters.
UNSTORABLE: dict[str, Any] = {
    "nodes": [
        {
            "id": "bad",
            "type": "TRANSFORM",
            "config": {"output": {"apiKey": OUTPUT_CANARY, "nul": "{{ 'a\\x00b' }}"}},
            "retry": {"maxAttempts": 1},
        }
    ],
    "edges": [],
}


@pytest.fixture(scope="module")
def proc_settings(
    private_pg_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    data = tmp_path_factory.mktemp("procs")
    return make_settings(private_pg_url, data, redis_url=redis_url, log_level="info")


def _wait_for(
    http: httpx.Client, run_id: str, token: str, until: float, *, terminal: bool = True
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    while True:
        run: dict[str, Any] = http.get(f"/api/runs/{run_id}", headers=headers).json()
        if run["status"] in ("COMPLETED", "FAILED", "CANCELLED") or time.monotonic() > until:
            assert not terminal or run["status"] == "FAILED", run
            return run
        time.sleep(0.1)


def _drive(base_url: str, sink_url: str) -> list[str]:
    """Requests that carry every kind of secret; returns the JWTs the server handed out."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        email = unique_email("procs")
        body = {"tenantName": "P", "email": email, "password": PASSWORD_CANARY, "name": "P"}
        token = http.post("/api/auth/register", json=body).json()["token"]
        login = {"email": email, "password": PASSWORD_CANARY}
        second = http.post("/api/auth/login", json=login).json()["token"]
        wrong = http.post(
            "/api/auth/login", json={"email": email, "password": "x" + PASSWORD_CANARY}
        )
        assert wrong.status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        workflow = {"name": "secrets", "definition": _processes_definition(sink_url)}
        created = http.post("/api/workflows", json=workflow, headers=auth).json()
        run = http.post(f"/api/workflows/{created['id']}/execute", json={}, headers=auth).json()
        _wait_for(http, run["id"], token, time.monotonic() + STEP_TIMEOUT)
        # ?token= on the SSE stream (EventSource cannot send headers) and on the websocket.
        with http.stream("GET", f"/api/runs/{run['id']}/stream?token={second}") as stream:
            assert stream.status_code == 200
            stream.read()
        asyncio.run(_websocket(base_url, second))
        bad = {"name": "unstorable", "definition": UNSTORABLE}
        created = http.post("/api/workflows", json=bad, headers=auth).json()
        run = http.post(f"/api/workflows/{created['id']}/execute", json={}, headers=auth).json()
        # Failed once (INVALID_OUTPUT), or stuck retrying the failing transaction: either way
        # the worker has logged about it by now.
        _wait_for(http, run["id"], token, time.monotonic() + 10, terminal=False)
    return [token, second]


async def _websocket(base_url: str, token: str) -> None:
    async with GraphQLWs.connect(base_url, query=f"?token={token}", payload={}) as ws:
        op = await ws.subscribe('subscription { runEvents(runId: "nope") { seq } }', {})
        assert (await ws.collect(op, seconds=20)).errors


def test_no_process_prints_a_secret(
    proc_settings: Settings, sink: tuple[Sink, str], tmp_path: Path
) -> None:
    """A real API process (access log on) and a real worker on Postgres + Redis, driven with
    requests that carry every kind of secret; then their whole output is read."""
    logs = [tmp_path / "api.log", tmp_path / "worker.log"]
    with (
        ApiProcess(proc_settings, log=logs[0]) as api,
        WorkerProcess(proc_settings, log=logs[1]),
    ):
        tokens = _drive(api.base_url, sink[1])
    api_log, worker_log = (path.read_text(errors="replace") for path in logs)
    # The access log was on and scanned: it shows the request lines, query values redacted.
    assert "/stream?token=[REDACTED]" in api_log
    assert "/graphql?token=[REDACTED]" in api_log
    assert "worker ready" in worker_log
    canaries = [
        HOOK_SECRET,
        AUTH_CANARY,
        OUTPUT_CANARY,
        PASSWORD_CANARY,
        TEST_SECRET,
        "$argon2",
        *tokens,
        *(t.rsplit(".", 1)[1] for t in tokens),  # a JWT's signature on its own
    ]
    for name, text in (("api", api_log), ("worker", worker_log)):
        leaked = [c for c in canaries if c in text]
        assert not leaked, f"{name} output shows {leaked}"
        # Every line came through the scrubbing JSON formatter (uvicorn's and taskiq's too).
        for line in filter(None, text.splitlines()):
            assert line.startswith("{"), line
            assert isinstance(json.loads(line), dict), line
