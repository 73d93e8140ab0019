"""W6 and W7: workloads whose steps do real I/O, so every step goes through the queue, a lease,
an outbound HTTP call and a fenced record (no inline shortcut: HTTP_REQUEST is not pure).

W6: one run of a 20-step chain of HTTP_REQUEST steps against the loopback sink (per step ms,
beside the floor's one-hop chain). W7: 300 runs of 3 HTTP_REQUEST steps submitted at once
(steps/s, beside the floor's 300 x 3 chains). The API and worker must allow loopback egress
(``TREADLE_EGRESS_ALLOW=127.0.0.1``, set by the bench's environment).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

from bench.client import Api, BenchError, parse_time

W6_STEPS: Final = 20
W7_RUNS: Final = 300
W7_CHAIN: Final = 3


def http_chain(length: int, port: int) -> dict[str, Any]:
    """``h0 → h1 → …``: each step POSTs its parent's answer counter to the sink."""
    url = f"http://127.0.0.1:{port}/step"
    nodes = [
        {
            "id": f"h{i}",
            "type": "HTTP_REQUEST",
            "config": {
                "method": "POST",
                "url": url,
                "body": {
                    "n": "{{ input.n }}" if i == 0 else f"{{{{ steps.h{i - 1}.output.status }}}}"
                },
            },
        }
        for i in range(length)
    ]
    edges = [{"from": f"h{i - 1}", "to": f"h{i}"} for i in range(1, length)]
    return {"nodes": nodes, "edges": edges}


class HttpWorkloads:
    """W6 and W7 of one case, against a running sink on ``port``."""

    def __init__(self, api: Api, port: int, runs: int = W7_RUNS) -> None:
        self.api, self.port, self.runs = api, port, runs
        self.w6_id = ""

    async def setup(self) -> None:
        self.w6_id = await self.api.create_workflow(
            "bench W6 http chain", http_chain(W6_STEPS, self.port)
        )
        await self.api.run_once(self.w6_id, {"n": 0})  # warm: the worker's HTTP client pool

    async def w6(self) -> dict[str, float]:
        return await w6(self.api, self.w6_id)

    async def w7(self) -> dict[str, float]:
        workflow = await self.api.create_workflow("bench W7 http", http_chain(W7_CHAIN, self.port))
        return await w7(self.api, workflow, self.runs)


async def w6(api: Api, workflow_id: str) -> dict[str, float]:
    finished = await api.run_once(workflow_id, {"n": 0})
    run = await api.get_run(finished.run_id)
    if run["status"] != "COMPLETED":
        raise BenchError(f"W6 run ended {run['status']}")
    server = parse_time(run["finishedAt"]) - parse_time(run["createdAt"])
    return {
        "total_s": finished.seconds,
        "per_step_ms": finished.seconds * 1000 / W6_STEPS,
        "server_total_s": server,
    }


async def w7(api: Api, workflow_id: str, runs: int = W7_RUNS) -> dict[str, float]:
    gate = asyncio.Semaphore(64)

    async def submit(n: int) -> None:
        async with gate:
            await api.execute(workflow_id, {"n": n})

    wall, started = time.time(), time.perf_counter()
    await asyncio.gather(*(submit(i) for i in range(runs)))
    deadline = started + 300
    while (done := await api.count_runs(workflow_id, "COMPLETED")) < runs:
        if time.perf_counter() > deadline:
            raise BenchError(f"W7: only {done}/{runs} runs completed in 300 s")
        if await api.count_runs(workflow_id, "FAILED"):
            raise BenchError("W7: a run failed")
        await asyncio.sleep(0.05)
    finished = [r for r in await api.list_runs(workflow_id) if r["status"] == "COMPLETED"]
    elapsed = max(parse_time(run["finishedAt"]) for run in finished) - wall
    return {
        "total_s": elapsed,
        "steps_per_s": runs * W7_CHAIN / elapsed,
        "runs_per_s": runs / elapsed,
    }
