"""Two more workloads under the same faults: approvals and a cron trigger.

- **Approval.** Runs of ``approve (APPROVAL) -> ok (CONDITION) -> yes | no`` are started
  through the APIs; a resolver approves each one once it waits, failing over between the APIs.
  Every run must complete on the ``yes`` branch with one ``STEP_WAITING`` and one decision.
- **Cron.** A workflow whose trigger ticks every second runs for the whole start window and is
  then deleted. Every tick from the first to the last must have started exactly one run (none
  skipped, none twice, whichever worker fired it, whatever was killed), all completed, and
  nothing may start after the delete.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
import httpx

from chaos.workload import ApiError, Client

CRON_KEY: Final = "tick"


def approval_definition() -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "approve", "type": "APPROVAL", "config": {"prompt": "ship {{ input.i }}?"}},
            {
                "id": "ok",
                "type": "CONDITION",
                "config": {"expression": "steps.approve.output.approved"},
            },
            {"id": "yes", "type": "TRANSFORM", "config": {"output": {"i": "{{ input.i }}"}}},
            {"id": "no", "type": "TRANSFORM", "config": {"output": "rejected"}},
        ],
        "edges": [
            {"from": "approve", "to": "ok"},
            {"from": "ok", "to": "yes", "when": True},
            {"from": "ok", "to": "no", "when": False},
        ],
    }


def cron_definition() -> dict[str, Any]:
    trigger = {"id": CRON_KEY, "type": "cron", "schedule": "* * * * * *", "input": {"cron": 1}}
    return {
        "nodes": [{"id": "echo", "type": "TRANSFORM", "config": {"output": "{{ input }}"}}],
        "edges": [],
        "triggers": [trigger],
    }


@dataclass
class Extras:
    client: Client
    approval_workflow: str = ""
    cron_workflow: str = ""
    approval_runs: dict[int, str] = field(default_factory=dict)  # index -> run id
    resolved: set[str] = field(default_factory=set)
    cron_deleted: bool = False

    async def setup(self) -> None:
        self.approval_workflow = await self._create("chaos-approval", approval_definition())
        self.cron_workflow = await self._create("chaos-cron", cron_definition())

    async def _create(self, name: str, definition: dict[str, Any]) -> str:
        response = await self._call(
            "POST",
            "/api/workflows",
            0,
            time.monotonic() + 30,
            json={
                "name": name,
                "definition": definition,
            },
        )
        if response is None or response.status_code != 201:
            raise ApiError(f"create {name}: {response and response.text}")
        workflow_id: str = response.json()["id"]
        return workflow_id

    async def _call(
        self, method: str, path: str, api: int, deadline: float, **kwargs: Any
    ) -> httpx.Response | None:
        """One call, failing over between the APIs on network errors and 5xx until deadline."""
        client = self.client
        headers = {"Authorization": f"Bearer {client.token}", **kwargs.pop("headers", {})}
        while time.monotonic() < deadline:
            try:
                response = await client.http.request(
                    method,
                    f"{client.urls[api % len(client.urls)]}{path}",
                    headers=headers,
                    **kwargs,
                )
            except httpx.HTTPError:
                response = None
            if response is not None and response.status_code < 500:
                return response
            api += 1
            await asyncio.sleep(0.25)
        return None

    async def start_approval(self, index: int, deadline: float) -> None:
        path = f"/api/workflows/{self.approval_workflow}/execute"
        response = await self._call(
            "POST",
            path,
            index,
            deadline,
            json={"input": {"i": index}},
            headers={"Idempotency-Key": f"approval-{index}"},
        )
        if response is not None and response.status_code in (200, 202):
            self.approval_runs[index] = response.json()["id"]

    async def resolve_loop(self, deadline: float, starting: asyncio.Event) -> None:
        """Approve every waiting run until all started ones are resolved (or the deadline)."""
        while time.monotonic() < deadline:
            pending = [r for r in self.approval_runs.values() if r not in self.resolved]
            if not pending and starting.is_set():
                return
            for run_id in pending:
                await self._resolve(run_id, deadline)
            await asyncio.sleep(0.5)

    async def _resolve(self, run_id: str, deadline: float) -> None:
        path = f"/api/runs/{run_id}/steps/approve/approve"
        until = min(deadline, time.monotonic() + 5)
        response = await self._call(
            "POST", path, len(self.resolved), until, json={"approved": True}
        )
        if response is None:
            return
        if response.status_code == 200:
            self.resolved.add(run_id)
        elif response.status_code == 409:  # not waiting yet, or our earlier answer was lost
            run = await self._call("GET", f"/api/runs/{run_id}", 0, until)
            steps = {s["nodeId"]: s for s in run.json()["steps"]} if run is not None else {}
            if steps.get("approve", {}).get("status") == "COMPLETED":
                self.resolved.add(run_id)

    async def delete_cron(self, deadline: float) -> None:
        response = await self._call("DELETE", f"/api/workflows/{self.cron_workflow}", 0, deadline)
        self.cron_deleted = response is not None and response.status_code in (204, 404)


async def judge_extras(dsn: str, extras: Extras) -> list[tuple[str, str, bool]]:
    """``(check, value, ok)`` rows for the table."""
    conn = await asyncpg.connect(dsn)
    try:
        approvals = await conn.fetch(
            "SELECT r.id::text AS id, r.status, s.output::text AS output, "
            "(SELECT count(*) FROM workflow_events e WHERE e.run_id = r.id "
            " AND e.type = 'STEP_WAITING') AS waits "
            "FROM workflow_runs r JOIN workflow_steps s ON s.run_id = r.id "
            "AND s.node_id = 'approve' WHERE r.workflow_id = $1::uuid",
            extras.approval_workflow,
        )
        crons = await conn.fetch(
            "SELECT idempotency_key, status, created_at FROM workflow_runs "
            "WHERE workflow_id = $1::uuid",
            extras.cron_workflow,
        )
        deleted_at = await conn.fetchval(
            "SELECT deleted_at FROM workflows WHERE id = $1::uuid", extras.cron_workflow
        )
    finally:
        await conn.close()
    return _approval_rows(extras, approvals) + _cron_rows(extras, crons, deleted_at)


def _approval_rows(extras: Extras, rows: list[Any]) -> list[tuple[str, str, bool]]:
    started = len(extras.approval_runs)
    good = [
        r
        for r in rows
        if r["status"] == "COMPLETED"
        and '"approved": true' in (r["output"] or "")
        and r["waits"] == 1
    ]
    return [
        (
            "approval runs completed, approved once / started",
            f"{len(good)}/{started}",
            started > 0 and len(good) == started == len(rows),
        )
    ]


def _cron_rows(
    extras: Extras, rows: list[Any], deleted_at: datetime | None
) -> list[tuple[str, str, bool]]:
    prefix = f"cron:{CRON_KEY}:"
    ticks = sorted(datetime.fromisoformat(r["idempotency_key"].removeprefix(prefix)) for r in rows)
    distinct = sorted(set(ticks))
    span = int((distinct[-1] - distinct[0]).total_seconds()) + 1 if distinct else 0
    expected = {distinct[0] + timedelta(seconds=i) for i in range(span)} if distinct else set()
    skipped = len(expected - set(distinct))
    late = [r for r in rows if deleted_at is None or r["created_at"] > deleted_at]
    done = sum(r["status"] == "COMPLETED" for r in rows)
    return [
        (
            "cron ticks fired (runs completed)",
            f"{len(distinct)} ({done})",
            bool(rows) and done == len(rows),
        ),
        (
            "cron ticks twice / skipped",
            f"{len(ticks) - len(distinct)} / {skipped}",
            len(ticks) == len(distinct) and not skipped,
        ),
        ("cron runs after the workflow's delete", str(len(late)), extras.cron_deleted and not late),
    ]
