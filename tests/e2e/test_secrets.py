"""Secrets never leak: not in API answers, run history, errors or logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Account
from tests.e2e.test_runs import wait_run
from tests.fakes import serve_app
from tests.fakes.sink import Sink
from tests.support.client import Api

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
