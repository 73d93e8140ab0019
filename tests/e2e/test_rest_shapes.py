"""Every REST route's real answers match the OpenAPI document the server serves.

One tenant walks every operation (embedded and PostgreSQL + Redis + a worker): register, log
in, add a user, create, read, list, update and delete workflows (with cron and webhook
triggers, an APPROVAL and a failing node), start, repeat, list, read, follow, cancel, rerun
and approve runs, fire a signed webhook, and read health and the document itself, plus error
answers. Each response body is validated against the schema the document declares for that
operation and status (JSON Schema 2020-12, ``$ref`` into the document's components), and
the walk must reach every documented operation.

The schemathesis pass (``test_openapi.py``) fuzzes mostly invalid input; this walk checks the
shapes of the answers a real client gets on the success paths, with real data in them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.e2e.conftest import PASSWORD
from tests.support.client import unique_email
from treadle.engine.steps.webhook import sign

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
DEFINITION: dict[str, Any] = {
    "nodes": [
        {"id": "shape", "type": "TRANSFORM", "config": {"output": {"n": "{{ input.n }}"}}},
        {"id": "ask", "type": "APPROVAL", "config": {"prompt": "ok?"}},
        {"id": "done", "type": "TRANSFORM", "config": {"output": 1}},
    ],
    "edges": [{"from": "shape", "to": "ask"}, {"from": "ask", "to": "done"}],
    "triggers": [
        {"id": "nightly", "type": "cron", "schedule": "0 3 * * *", "timezone": "Europe/Paris"},
        {"id": "hook", "type": "webhook"},
    ],
}
FAILING: dict[str, Any] = {
    "nodes": [
        {
            "id": "boom",
            "type": "TRANSFORM",
            "config": {"output": "{{ input.missing.deeper }}"},
            "retry": {"maxAttempts": 1},
        }
    ],
    "edges": [],
}


class Walker:
    """An HTTP client that checks each answer against the served document."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=30)
        self.document: dict[str, Any] = self.http.get("/api/openapi.json").json()
        self.seen: set[str] = set()
        self.templates = [
            (path, method.upper())
            for path, item in self.document["paths"].items()
            for method in item
            if method != "parameters"
        ]

    def _operation(self, method: str, url: str) -> tuple[str, dict[str, Any]]:
        parts = url.split("?")[0].strip("/").split("/")
        for path, verb in self.templates:
            pattern = path.strip("/").split("/")
            same = len(pattern) == len(parts) and all(
                p == u or p.startswith("{") for p, u in zip(pattern, parts, strict=False)
            )
            if verb == method and same:
                return f"{verb} {path}", self.document["paths"][path][verb.lower()]
        raise AssertionError(f"{method} {url} is not documented")

    def check(self, response: httpx.Response) -> Any:
        label, operation = self._operation(response.request.method, str(response.request.url.path))
        self.seen.add(label)
        declared = operation["responses"].get(str(response.status_code))
        assert declared is not None, f"{label} answered undocumented {response.status_code}"
        while "$ref" in declared:
            declared = self.document["components"]["responses"][declared["$ref"].split("/")[-1]]
        content = declared.get("content")
        if content is None:
            assert not response.content, f"{label} {response.status_code}: a body, none declared"
            return None
        media = response.headers["content-type"].split(";")[0]
        assert media in content, f"{label}: {media} not among {list(content)}"
        if media == "text/event-stream":
            return [self._event(label, block) for block in _sse_blocks(response.text)]
        body = response.json()
        self.validate(label, content[media]["schema"], body)
        return body

    def _event(self, label: str, block: dict[str, str]) -> dict[str, str]:
        self.validate(label, {"$ref": "#/components/schemas/StreamEvent"}, block)
        return block

    def validate(self, label: str, schema: dict[str, Any], body: Any) -> None:
        root = {**schema, "components": self.document["components"]}
        validator = jsonschema_rs.Draft202012Validator(root, validate_formats=True)
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
        assert not errors, f"{label}: the answer breaks the document: {errors}\n{body}"

    def call(self, method: str, url: str, expect: int, **kwargs: Any) -> Any:
        response = self.http.request(method, url, **kwargs)
        assert response.status_code == expect, (method, url, response.text)
        return self.check(response)


def _sse_blocks(text: str) -> list[dict[str, str]]:
    blocks = []
    for chunk in text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in chunk.splitlines() if ": " in line)
        if "data" in fields:
            blocks.append(fields)
    return blocks


@pytest.fixture
def walker(server: str) -> Iterator[Walker]:
    walker = Walker(server)
    yield walker
    walker.http.close()


def wait(walker: Walker, run_id: str, done: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = walker.call("GET", f"/api/runs/{run_id}", 200)
        waiting = any(
            step["status"] == "RUNNING" and step["nodeId"] == "ask" for step in run["steps"]
        )
        if run["status"] in done or ("WAITING" in done and waiting):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


def test_every_answer_matches_the_document(walker: Walker) -> None:
    w = walker
    email = unique_email("shapes")
    account = {"tenantName": "Shapes", "email": email, "password": PASSWORD, "name": "Ada"}
    w.call("POST", "/api/auth/register", 201, json=account)
    token = w.call("POST", "/api/auth/login", 200, json={"email": email, "password": PASSWORD})[
        "token"
    ]
    w.http.headers["Authorization"] = f"Bearer {token}"
    w.call("GET", "/api/me", 200)
    member = {"email": unique_email("member"), "password": PASSWORD, "name": "Bo"}
    w.call("POST", "/api/users", 201, json=member)

    flow = w.call("POST", "/api/workflows", 201, json={"name": "f", "definition": DEFINITION})
    assert flow["definition"]["triggers"], "the walk must show a definition with triggers"
    w.call("GET", f"/api/workflows/{flow['id']}", 200)
    w.call("PUT", f"/api/workflows/{flow['id']}", 200, json={"description": "d"})
    w.call("GET", "/api/workflows", 200, params={"pageSize": 5})
    triggers = w.call("GET", f"/api/workflows/{flow['id']}/triggers", 200)["items"]
    hook = next(t for t in triggers if t["type"] == "webhook")

    headers = {"Idempotency-Key": "walk-1"}
    run = w.call(
        "POST",
        f"/api/workflows/{flow['id']}/execute",
        202,
        json={"input": {"n": 1}},
        headers=headers,
    )
    w.call(
        "POST",
        f"/api/workflows/{flow['id']}/execute",
        200,
        json={"input": {"n": 1}},
        headers=headers,
    )
    wait(w, run["id"], {"WAITING"})
    w.call(
        "POST",
        f"/api/runs/{run['id']}/steps/ask/approve",
        200,
        json={"approved": True, "comment": "fine"},
    )
    wait(w, run["id"], TERMINAL)
    w.call("GET", f"/api/workflows/{flow['id']}/runs", 200)
    w.call("GET", f"/api/runs/{run['id']}/events", 200, params={"afterSeq": 0})
    events = w.call("GET", f"/api/runs/{run['id']}/stream", 200)
    assert len(events) >= 3

    other = w.call("POST", f"/api/workflows/{flow['id']}/execute", 202, json={"input": {"n": 2}})
    w.call("POST", f"/api/runs/{other['id']}/cancel", 200)
    w.call("POST", f"/api/runs/{other['id']}/rerun", 202, json={})

    failing = w.call("POST", "/api/workflows", 201, json={"name": "x", "definition": FAILING})
    failed = w.call("POST", f"/api/workflows/{failing['id']}/execute", 202, json={})
    assert wait(w, failed["id"], TERMINAL)["status"] == "FAILED"

    raw = json.dumps({"n": 3}).encode()
    signed = {"X-Treadle-Signature": sign(hook["secret"], raw, int(time.time()))}
    signed["content-type"] = "application/json"
    w.call("POST", f"/api/hooks/{hook['id']}", 202, content=raw, headers=signed)
    w.call("POST", f"/api/hooks/{hook['id']}", 200, content=raw, headers=signed)

    w.call("GET", "/api/health", 200)
    w.call("GET", "/api/openapi.json", 200)
    w.call("DELETE", f"/api/workflows/{failing['id']}", 204)
    # Error answers: each is the documented error shape with its fixed code.
    w.call("GET", "/api/runs/00000000-0000-0000-0000-000000000000", 404)
    w.call("POST", "/api/workflows", 400, json={"name": "", "definition": {}})
    w.call("POST", f"/api/runs/{run['id']}/cancel", 409)
    w.call("GET", "/api/me", 401, headers={"Authorization": "Bearer nope"})

    documented = {f"{method} {path}" for path, method in w.templates}
    assert w.seen == documented, f"not walked: {sorted(documented - w.seen)}"


def test_the_walk_fails_on_an_answer_the_document_does_not_describe(walker: Walker) -> None:
    """Not vacuous: a body with a field the document does not list is refused."""
    run = {"id": "x", "workflowId": "y", "unexpected": 1}
    with pytest.raises(AssertionError, match="breaks the document"):
        walker.validate("GET /api/runs/{id}", {"$ref": "#/components/schemas/Run"}, run)
    health = {"status": "ok", "database": "ok", "queue": "ok"}
    walker.validate("GET /api/health", {"$ref": "#/components/schemas/Health"}, health)
