"""The benchmark's HTTP client of the Treadle REST API (httpx, one keep-alive pool)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import httpx

from bench.feed import RunFeed

TERMINAL: Final = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
TERMINAL_EVENTS: Final = frozenset({"RUN_COMPLETED", "RUN_FAILED", "RUN_CANCELLED", "error"})


class BenchError(RuntimeError):
    """The system under test did something a workload does not allow (a failed run, a 500)."""


@dataclass(frozen=True, slots=True)
class Finished:
    """A run seen through to its end: its status, and the client's clock at execute and end."""

    run_id: str
    status: str
    started: float  # time.perf_counter() just before POST …/execute
    ended: float  # time.perf_counter() when the client saw the run end

    @property
    def seconds(self) -> float:
        return self.ended - self.started


def parse_time(value: str) -> float:
    """An API timestamp (ISO 8601) as a Unix time."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Api:
    """REST calls the workloads need. ``observe``: how a run's end is seen, ``feed`` (the
    tenant's ``WS /ws``, see ``bench.feed``), ``sse`` or ``poll``."""

    def __init__(self, base_url: str, *, observe: str = "feed", poll_interval: float = 0.002):
        # Idle connections are dropped before uvicorn's 5 s keep-alive ends them: reusing one
        # the server is closing at that moment fails the request with a ReadError.
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=2)
        self.http = httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits)
        self.observe = observe
        self.poll_interval = poll_interval
        self.feed: RunFeed | None = None

    async def aclose(self) -> None:
        if self.feed is not None:
            self.feed.close()
        await self.http.aclose()

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, path, **kwargs)
        if response.status_code >= 300:
            raise BenchError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    async def register(self) -> None:
        suffix = uuid.uuid4().hex[:10]
        body = {
            "tenantName": f"bench-{suffix}",
            "email": f"bench-{suffix}@bench.test",
            "password": "bench password " + suffix,
            "name": "Bench",
        }
        auth = await self._json("POST", "/api/auth/register", json=body)
        self.http.headers["Authorization"] = f"Bearer {auth['token']}"

    async def create_workflow(self, name: str, definition: dict[str, Any]) -> str:
        body = {"name": name, "definition": definition}
        workflow = await self._json("POST", "/api/workflows", json=body)
        return str(workflow["id"])

    async def execute(self, workflow_id: str, value: Any = None) -> dict[str, Any]:
        run: dict[str, Any] = await self._json(
            "POST", f"/api/workflows/{workflow_id}/execute", json={"input": value}
        )
        return run

    async def get_run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = await self._json("GET", f"/api/runs/{run_id}")
        return run

    async def stream_supported(self) -> bool:
        response = await self.http.get(f"/api/runs/{uuid.uuid4()}/stream")
        return response.status_code != 404 or "no such route" not in response.text

    async def run_once(self, workflow_id: str, value: Any = None) -> Finished:
        """Execute a run and wait for its end as the client sees it."""
        if self.observe == "feed" and self.feed is None:
            self.feed = await self._open_feed()
        started = time.perf_counter()
        run = await self.execute(workflow_id, value)
        if self.feed is not None:
            status = await self.feed.wait(run["id"], self._status_if_ended)
        elif self.observe == "sse":
            status = await self._follow(run["id"])
        else:
            status = await self._poll(run["id"])
        ended = time.perf_counter()
        if status != "COMPLETED":
            detail = await self.get_run(run["id"])
            raise BenchError(f"run {run['id']} ended {status}: {detail.get('error')}")
        return Finished(run["id"], status, started, ended)

    async def _follow(self, run_id: str) -> str:
        """Read ``GET /api/runs/:id/stream`` (SSE, from seq 0) up to the run's terminal event."""
        path = f"/api/runs/{run_id}/stream"
        async with self.http.stream("GET", path, params={"afterSeq": 0}) as response:
            if response.status_code != 200:
                raise BenchError(f"GET {path}: {response.status_code}")
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                    if event in TERMINAL_EVENTS:
                        return event.removeprefix("RUN_") if event != "error" else "STREAM_ERROR"
        return "STREAM_ENDED"

    async def _open_feed(self) -> RunFeed:
        feed = RunFeed()
        token = self.http.headers["Authorization"].removeprefix("Bearer ")
        await feed.open(str(self.http.base_url), token)
        return feed

    async def _status_if_ended(self, run_id: str) -> str | None:
        status = (await self.get_run(run_id))["status"]
        return str(status) if status in TERMINAL else None

    async def _poll(self, run_id: str) -> str:
        while True:
            run = await self.get_run(run_id)
            if run["status"] in TERMINAL:
                return str(run["status"])
            await asyncio.sleep(self.poll_interval)

    async def count_runs(self, workflow_id: str, status: str) -> int:
        page = await self._json(
            "GET", f"/api/workflows/{workflow_id}/runs", params={"status": status, "pageSize": 1}
        )
        return int(page["total"])

    async def list_runs(self, workflow_id: str) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self._json(
                "GET", f"/api/workflows/{workflow_id}/runs", params={"page": page, "pageSize": 100}
            )
            runs.extend(body["items"])
            if len(runs) >= body["total"] or not body["items"]:
                return runs
            page += 1
