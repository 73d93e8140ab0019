"""Secrets never leak: not in API answers, run history, errors or logs."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET, make_settings
from tests.e2e.conftest import Account
from tests.e2e.test_runs import wait_run
from tests.fakes import serve_app
from tests.fakes.sink import Sink
from tests.support.client import Api, unique_email
from tests.support.live import ApiProcess, WorkerProcess
from tests.support.ws import GraphQLWs
from treadle.settings import Settings

HOOK_SECRET = "canary-hook-secret-5f1e"
BEARER = "canary-bearer-token-9c2d"
URL_PASSWORD = "canary-url-password-77ab"


@pytest.fixture(scope="module")
def sink() -> Iterator[tuple[Sink, str]]:
    recorder = Sink()
    with serve_app(recorder.app) as url:
        yield recorder, url


def _definition(url: str, path: str) -> dict[str, Any]:
    return {
        "nodes": [
            {
                "id": "call",
                "type": "HTTP_REQUEST",
                "config": {
                    "url": f"{url}{path}/call",
                    "headers": {"Authorization": f"Bearer {BEARER}"},
                },
            },
            {
                "id": "hook",
                "type": "WEBHOOK",
                "config": {"url": f"{url}{path}/hook", "secret": HOOK_SECRET},
            },
            {
                "id": "leaky",
                "type": "HTTP_REQUEST",
                "config": {"url": f"http://user:{URL_PASSWORD}@127.0.0.2:9/x"},
            },
        ],
        "edges": [{"from": "call", "to": "hook"}, {"from": "hook", "to": "leaky"}],
    }


def _assert_clean(*texts: str) -> None:
    for text in texts:
        for canary in (HOOK_SECRET, BEARER, URL_PASSWORD):
            assert canary not in text


def test_secrets_stay_out_of_answers_history_errors_and_logs(
    api: Api, alice: Account, sink: tuple[Sink, str], capfd: pytest.CaptureFixture[str]
) -> None:
    recorder, url = sink
    path = f"/s-{api.kind}-{time.monotonic_ns()}"
    created = api.create_workflow(alice.token, name="secretive", definition=_definition(url, path))
    shown = api.get_workflow(alice.token, created["id"])
    assert shown["definition"]["nodes"][1]["config"]["secret"] == "[REDACTED]"

    run = wait_run(api, alice.token, api.execute(alice.token, created["id"], {})["id"])
    assert run["status"] == "FAILED"  # the leaky node is refused by the egress guard
    events = api.events(alice.token, run["id"])
    listed = api.list_workflows(alice.token)
    _assert_clean(*(json.dumps(x) for x in (created, shown, run, events, listed)))

    # The secrets were used for real: the sink saw the bearer token and a valid signature.
    hook = next(r for r in recorder.requests if r.path == f"{path}/hook")
    assert (
        next(r for r in recorder.requests if r.path == f"{path}/call").headers["authorization"]
        == f"Bearer {BEARER}"
    )
    stamp, signature = (p.split("=", 1)[1] for p in hook.headers["x-treadle-signature"].split(","))
    digest = hmac.new(HOOK_SECRET.encode(), f"{stamp}.".encode() + hook.body, hashlib.sha256)
    assert hmac.compare_digest(signature, digest.hexdigest())

    # Writing back what was shown keeps the stored secrets.
    api.update_workflow(alice.token, created["id"], definition=shown["definition"])
    api.execute(alice.token, created["id"], {})
    deadline = time.monotonic() + 20
    while len([r for r in recorder.requests if r.path == f"{path}/hook"]) < 2:
        assert time.monotonic() < deadline, "second webhook never arrived"
        time.sleep(0.05)
    second = [r for r in recorder.requests if r.path == f"{path}/hook"][1]
    stamp, signature = (
        p.split("=", 1)[1] for p in second.headers["x-treadle-signature"].split(",")
    )
    digest = hmac.new(HOOK_SECRET.encode(), f"{stamp}.".encode() + second.body, hashlib.sha256)
    assert hmac.compare_digest(signature, digest.hexdigest())

    out, err = capfd.readouterr()
    _assert_clean(out, err)


# --- every process's real output: `treadle serve` (access log on) and `treadle worker` ---------

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
