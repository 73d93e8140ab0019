"""Workloads W1-W5 against a running Treadle API (and its workers), over HTTP.

How the end of a run is seen (``Api.observe``): by default the client watches the tenant's run
feed (``WS /ws``, one socket for all runs; see ``bench.feed``) for the run's ``RUN_COMPLETED``;
``--observe sse`` follows the run's SSE stream (``GET /api/runs/:id/stream?afterSeq=0``) and
``--observe poll`` polls ``GET /api/runs/:id`` every 2 ms instead. W3 does
not follow 300 streams: it polls the COMPLETED count of its workflow every 50 ms and takes the
end time from the runs' ``finishedAt`` (written by the worker on this same machine's clock).
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from bench.client import Api, BenchError, parse_time

W2_STEPS: Final = 100
W3_RUNS: Final = 300
W3_CHAIN: Final = 3
W4_WIDTH: Final = 100
W5_SUBSCRIBERS: Final = 1000
W5B_SUBSCRIBERS: Final = 10_000  # W5b: spread over W5B_RUNS runs, on one API process
W5B_RUNS: Final = 100
# W3's executes in flight at once (the client's connection pool; more only queue inside httpx).
SUBMIT_CONCURRENCY: Final = 64


# --- workflow definitions ----------------------------------------------------------------------


def transform(node_id: str, output: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "TRANSFORM", "config": {"output": output}}


def single() -> dict[str, Any]:
    return {"nodes": [transform("a", {"n": "{{ input.n + 1 }}"})], "edges": []}


def chain(length: int) -> dict[str, Any]:
    """``s0 → s1 → …``: each step adds one to its parent's ``n``."""
    nodes = [transform("s0", {"n": "{{ input.n }}"})]
    nodes += [
        transform(f"s{i}", {"n": f"{{{{ steps.s{i - 1}.output.n + 1 }}}}"})
        for i in range(1, length)
    ]
    edges = [{"from": f"s{i - 1}", "to": f"s{i}"} for i in range(1, length)]
    return {"nodes": nodes, "edges": edges}


def fan_out(width: int) -> dict[str, Any]:
    """``root → b0 … b{width-1} → join``."""
    nodes = [transform("root", {"n": "{{ input.n }}"})]
    nodes += [transform(f"b{i}", {"i": i, "n": "{{ steps.root.output.n }}"}) for i in range(width)]
    nodes.append(transform("join", {"done": "{{ steps.b0.output.n }}"}))
    edges = [{"from": "root", "to": f"b{i}"} for i in range(width)]
    edges += [{"from": f"b{i}", "to": "join"} for i in range(width)]
    return {"nodes": nodes, "edges": edges}


# --- measurements ------------------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0-100) of ``values``."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * pct / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(slots=True)
class Sizes:
    """How big each workload is (``--quick`` shrinks the repeated ones)."""

    w1_runs: int = 200
    w2_steps: int = W2_STEPS
    w3_runs: int = W3_RUNS
    w4_width: int = W4_WIDTH
    w5_subscribers: int = W5_SUBSCRIBERS
    w5b_subscribers: int = W5B_SUBSCRIBERS
    w5b_runs: int = W5B_RUNS

    @classmethod
    def quick(cls) -> Sizes:
        return cls(w1_runs=30, w3_runs=60, w5_subscribers=100, w5b_subscribers=500, w5b_runs=10)


class Workloads:
    """The workflows of one case (one tenant), created once, and the workloads run on them."""

    def __init__(self, api: Api, sizes: Sizes) -> None:
        self.api = api
        self.sizes = sizes
        self.ids: dict[str, str] = {}

    async def setup(self) -> None:
        await self.api.register()
        self.ids["w1"] = await self.api.create_workflow("bench W1 single", single())
        self.ids["w2"] = await self.api.create_workflow(
            "bench W2 chain", chain(self.sizes.w2_steps)
        )
        self.ids["w4"] = await self.api.create_workflow(
            "bench W4 fan-out", fan_out(self.sizes.w4_width)
        )

    async def warm_up(self) -> None:
        """Fill connection pools and caches: a few sequential runs, then a small burst."""
        for _ in range(10):
            await self.api.run_once(self.ids["w1"], {"n": 1})
        await asyncio.gather(*(self.api.run_once(self.ids["w1"], {"n": 1}) for _ in range(20)))
        await self.api.run_once(self.ids["w4"], {"n": 1})

    async def w1(self) -> dict[str, float]:
        """A 1-step run, ``w1_runs`` times one after another: execute -> COMPLETED latency.

        ``server_p50_ms``: the same runs' ``createdAt`` -> ``finishedAt`` as the server recorded
        them, so the difference to ``p50_ms`` is the HTTP, queue pick-up and notification part.
        """
        latencies, ids = [], set()
        for n in range(self.sizes.w1_runs):
            finished = await self.api.run_once(self.ids["w1"], {"n": n})
            latencies.append(finished.seconds * 1000)
            ids.add(finished.run_id)
        runs = [run for run in await self.api.list_runs(self.ids["w1"]) if run["id"] in ids]
        server = [
            (parse_time(run["finishedAt"]) - parse_time(run["createdAt"])) * 1000 for run in runs
        ]
        return {
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99),
            "mean_ms": statistics.fmean(latencies),
            "server_p50_ms": percentile(server, 50),
        }

    async def w2(self) -> dict[str, float]:
        """One run of the chain: total, per step, and the server's own createdAt → finishedAt."""
        finished = await self.api.run_once(self.ids["w2"], {"n": 0})
        run = await self.api.get_run(finished.run_id)
        steps = self.sizes.w2_steps
        last = run["output"][f"s{steps - 1}"]["n"]
        if last != steps - 1:
            raise BenchError(f"W2 chain computed {last}, expected {steps - 1}")
        server = parse_time(run["finishedAt"]) - parse_time(run["createdAt"])
        return {
            "total_s": finished.seconds,
            "per_step_ms": finished.seconds * 1000 / steps,
            "server_total_s": server,
        }

    async def w3(self) -> dict[str, float]:
        """``w3_runs`` runs of a 3-step chain submitted at once: steps/s and runs/s."""
        count = self.sizes.w3_runs
        workflow = await self.api.create_workflow("bench W3 chain", chain(W3_CHAIN))
        gate = asyncio.Semaphore(SUBMIT_CONCURRENCY)

        async def submit(n: int) -> None:
            async with gate:
                await self.api.execute(workflow, {"n": n})

        wall, started = time.time(), time.perf_counter()
        await asyncio.gather(*(submit(i) for i in range(count)))
        submitted = time.perf_counter() - started
        deadline = started + 300
        while (done := await self.api.count_runs(workflow, "COMPLETED")) < count:
            if time.perf_counter() > deadline:
                raise BenchError(f"W3: only {done}/{count} runs completed in 300 s")
            if await self.api.count_runs(workflow, "FAILED"):
                raise BenchError("W3: a run failed")
            await asyncio.sleep(0.05)
        seen = time.perf_counter() - started
        runs = await self.api.list_runs(workflow)
        elapsed = max(parse_time(run["finishedAt"]) for run in runs) - wall
        return {
            "total_s": elapsed,
            "steps_per_s": count * W3_CHAIN / elapsed,
            "runs_per_s": count / elapsed,
            "ms_per_step": elapsed * 1000 / (count * W3_CHAIN),
            "submit_s": submitted,
            "observed_s": seen,
        }

    async def w4(self) -> dict[str, float]:
        """1 step → ``w4_width`` parallel steps → 1 join: total time."""
        finished = await self.api.run_once(self.ids["w4"], {"n": 7})
        run = await self.api.get_run(finished.run_id)
        server = parse_time(run["finishedAt"]) - parse_time(run["createdAt"])
        return {"total_s": finished.seconds, "server_total_s": server}


# --- W5 ----------------------------------------------------------------------------------------

W5_MODULE: Final = "bench.w5_fanout"
W5Runner = Callable[..., Awaitable[dict[str, Any]]]


def load_w5() -> W5Runner | None:
    """HOOK (W5): ``bench/w5_fanout.py`` is written separately. When it exists, its
    ``async def run(base_url, token, subscribers[, api_pid=…]) -> dict`` is called once per
    repetition; the dict should carry ``p50_ms``, ``p99_ms`` and ``mb_per_connection`` (and
    ``incomplete_or_gapped``/``errors``, reported as notes). Until it exists W5 is reported as
    not run.
    """
    try:
        module = importlib.import_module(W5_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != W5_MODULE:
            raise
        return None
    runner = getattr(module, "run", None)
    return runner if callable(runner) else None


async def w5(
    api: Api, runner: W5Runner, subscribers: int, api_pid: int, **options: Any
) -> dict[str, Any]:
    """W5 (``options`` empty) or W5b (``runs=``, ``steps=``) through the runner."""
    token = api.http.headers["Authorization"].removeprefix("Bearer ")
    base_url = str(api.http.base_url).rstrip("/")
    if "api_pid" in inspect.signature(runner).parameters:
        return await runner(base_url, token, subscribers, api_pid=api_pid, **options)
    return await runner(base_url, token, subscribers, **options)
