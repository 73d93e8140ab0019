"""The workload: one tenant, one multi-step workflow, runs started through both APIs."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from tests.fakes.sink import Sink

RETRY: Final = {"maxAttempts": 10, "backoffSeconds": 0.2, "maxBackoffSeconds": 1}
HTTP_NODES: Final = ("fetch", "left", "right", "notify")  # the nodes that call the sink
SLOW_MS: Final = 400  # the ``right`` branch waits this long at the sink, so kills land mid-call
WEBHOOK_SECRET: Final = "chaos-webhook-secret"  # noqa: S105 - a test value


def definition(sink_url: str) -> dict[str, Any]:
    """fetch → (left → wait, right) → gate → merge | fallback → join → notify."""
    i = "{{ input.i }}"

    def node(node_id: str, kind: str, config: dict[str, Any]) -> dict[str, Any]:
        return {"id": node_id, "type": kind, "config": config, "retry": RETRY}

    nodes = [
        node(
            "fetch",
            "HTTP_REQUEST",
            {"method": "POST", "url": f"{sink_url}/fetch/{i}", "body": {"i": i}},
        ),
        node("left", "HTTP_REQUEST", {"url": f"{sink_url}/left/{i}"}),
        node(
            "right",
            "HTTP_REQUEST",
            {"method": "PUT", "url": f"{sink_url}/slow/right/{i}", "query": {"ms": SLOW_MS}},
        ),
        node("wait", "DELAY", {"seconds": 1.5}),
        node(
            "gate",
            "CONDITION",
            {"expression": "steps.left.output.status == 200 and steps.right.output.status == 200"},
        ),
        node(
            "merge",
            "TRANSFORM",
            {"output": {"i": i, "right": "{{ steps.right.output.body.path }}"}},
        ),
        node("fallback", "TRANSFORM", {"output": {"i": i, "fallback": True}}),
        node("join", "TRANSFORM", {"output": {"i": i, "via": "{{ steps.merge.status }}"}}),
        node("notify", "WEBHOOK", {"url": f"{sink_url}/hook/{i}", "secret": WEBHOOK_SECRET}),
    ]
    edges = [
        {"from": "fetch", "to": "left"},
        {"from": "fetch", "to": "right"},
        {"from": "left", "to": "wait"},
        {"from": "wait", "to": "gate"},
        {"from": "right", "to": "gate"},
        {"from": "gate", "to": "merge", "when": True},
        {"from": "gate", "to": "fallback", "when": False},
        {"from": "merge", "to": "join"},
        {"from": "fallback", "to": "join"},
        {"from": "join", "to": "notify"},
    ]
    return {"nodes": nodes, "edges": edges}


def script_failures(sink: Sink, runs: int) -> int:
    """Make some first calls answer 503 (a retry each); returns how many were scripted."""
    scripted = 0
    for i in range(runs):
        if i % 3 == 0:
            sink.script(f"/fetch/{i}", 503)
            scripted += 1
        if i % 5 == 0:
            sink.script(f"/hook/{i}", 503)
            scripted += 1
    return scripted


class ApiError(Exception):
    pass


@dataclass
class Started:
    index: int
    run_id: str
    api: int  # which API accepted it
    at: float  # time.time()
    tries: int


@dataclass
class Client:
    """Async REST calls to any of the APIs (whose URLs never change across restarts)."""

    urls: Sequence[str]
    token: str = ""
    workflow_id: str = ""
    http: httpx.AsyncClient = field(
        default_factory=lambda: httpx.AsyncClient(trust_env=False, timeout=15)
    )
    start_failures: dict[str, int] = field(default_factory=dict)  # reason -> count

    async def aclose(self) -> None:
        await self.http.aclose()

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def setup(self, sink_url: str) -> None:
        email = f"chaos-{secrets.token_hex(4)}@example.test"
        body = {
            "tenantName": "Chaos",
            "email": email,
            "password": secrets.token_urlsafe(16),
            "name": "Chaos",
        }
        response = await self.http.post(f"{self.urls[0]}/api/auth/register", json=body)
        if response.status_code != 201:
            raise ApiError(f"register: {response.status_code} {response.text}")
        self.token = response.json()["token"]
        response = await self.http.post(
            f"{self.urls[0]}/api/workflows",
            json={"name": "chaos", "definition": definition(sink_url)},
            headers=self._headers(),
        )
        if response.status_code != 201:
            raise ApiError(f"create workflow: {response.status_code} {response.text}")
        self.workflow_id = response.json()["id"]

    def _failed(self, reason: str) -> None:
        self.start_failures[reason] = self.start_failures.get(reason, 0) + 1

    async def start_run(self, index: int, deadline: float) -> Started | None:
        """Execute with ``Idempotency-Key: chaos-<index>``, failing over between the APIs."""
        api = index % len(self.urls)
        tries = 0
        while time.monotonic() < deadline:
            tries += 1
            try:
                response = await self.http.post(
                    f"{self.urls[api]}/api/workflows/{self.workflow_id}/execute",
                    json={"input": {"i": index}},
                    headers={**self._headers(), "Idempotency-Key": f"chaos-{index}"},
                )
            except httpx.HTTPError as exc:
                self._failed(type(exc).__name__)
            else:
                if response.status_code in (200, 202):
                    return Started(index, response.json()["id"], api, time.time(), tries)
                self._failed(f"HTTP {response.status_code}")
            api = (api + 1) % len(self.urls)
            await asyncio.sleep(0.25)
        return None
