"""``python -m bench`` (``make bench``): run the benchmark, print the table, write the JSON.

Cases: ``pg1`` / ``pg2``: ``treadle serve`` plus ``treadle worker --processes 1|2`` on a fresh
PostgreSQL database (created for the case, dropped after) and Redis (the ``--redis-url``
database, flushed at start; each case its own stream); ``embedded``: ``treadle dev`` (SQLite,
in-process worker). Every process is a real subprocess, so its memory is its own: idle RSS and
PSS after warm-up, peak RSS (``VmHWM``) at the end. The floor runs first (bare Taskiq on the same
Redis, PostgreSQL single-row commit rate; see ``bench.floor``).

Each case: register a tenant, create the workflows, warm up, then ``--repeat`` times W1-W4
(W5 ``--w5-repeat`` times; see ``bench.workloads`` for what each measures and how a run's end is
observed). Around each workload the CPU time of the API, the worker, the database's server
processes, Redis, this client and everything else is read from /proc, per run or step.
``--profile`` also samples with py-spy (the API during W1, the step-running processes during
W2/W3) and counts the worker's SQL and Redis round trips; it slows what it measures.

Progress goes to stderr, the table to stdout, the JSON to ``--json`` (``$BENCH_JSON``, default
``bench-results.json``): the ``pg1`` case at the top level in the issue's shape, every case
under its own key, ``floor`` and ``meta`` besides.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from bench import floor as floor_mod
from bench import report, workloads
from bench.client import Api
from bench.measure import (
    WORKLOADS,
    CaseRun,
    Config,
    CpuMeter,
    log,
    note_load,
    profile_summaries,
    run_w5,
)
from bench.procs import (
    ROOT,
    Process,
    clean_env,
    flush_redis,
    free_port,
    treadle,
    wait_healthy,
)
from bench.report import CaseResult, FloorResult, add
from bench.sink import Sink
from bench.w5_fanout import raise_fd_limit
from bench.w6_http import HttpWorkloads
from bench.workloads import Sizes, Workloads
from treadle.dbadmin import create_database, drop_database

CASES: Final = {"pg1": 1, "pg2": 2, "embedded": 1}
TITLES: Final = {"pg1": "PG+Redis 1w", "pg2": "PG+Redis 2w", "embedded": "embedded"}
JWT_SECRET: Final = "bench-jwt-secret-" + "x" * 40


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cases", default="pg1,pg2,embedded", help="comma-separated: pg1,pg2,embedded"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (median, min, max)")
    parser.add_argument(
        "--quick", action="store_true", help="fast smoke run: 1 repetition, small W1/W3/W5"
    )
    parser.add_argument("--json", default=os.environ.get("BENCH_JSON") or "bench-results.json")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL") or "postgresql+asyncpg://root@127.0.0.1:5432/test",
        help="a server to create the benchmark's databases on (its database is left alone)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/14",
        help="a Redis database the benchmark may flush",
    )
    parser.add_argument(
        "--observe",
        choices=["feed", "sse", "poll"],
        default="feed",
        help="how a run's end is seen: the tenant's WS /ws feed, a per-run SSE stream, polling",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the floor measurements")
    parser.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        help="comma-separated subset of W1,W2,W3,W4,W5,W5B,W6,W7",
    )
    parser.add_argument(
        "--w5-repeat",
        type=int,
        default=1,
        help="repetitions of W5 (default 1: each holds a run ~30 s while 1,000 sockets attach)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy samples and round-trip counts (needs py-spy; slows what it measures)",
    )
    parser.add_argument(
        "--logs", default=None, help="directory for process logs (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    args.cases = [name.strip() for name in args.cases.split(",") if name.strip()]
    unknown = [name for name in args.cases if name not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    args.only = frozenset(name.strip().upper() for name in args.only.split(",") if name.strip())
    if not args.only <= set(WORKLOADS):
        parser.error(f"unknown workload(s): {', '.join(sorted(args.only - set(WORKLOADS)))}")
    if args.quick:
        args.repeat = 1
    return args


def treadle_env(config: Config, database_url: str, queue: str | None, port: int) -> dict[str, str]:
    """Production-like settings; rate limits high (still enforced, so still paid for)."""
    values = {
        "DATABASE_URL": database_url,
        "JWT_SECRET": JWT_SECRET,
        "TREADLE_ENV": "production",
        "LOG_LEVEL": "warning",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "TREADLE_DATA_DIR": str(config.logs / "data"),
        "TREADLE_RATE_API_PER_TENANT": "10000000/minute",
        "TREADLE_RATE_EXECUTE_PER_TENANT": "10000000/minute",
        "TREADLE_RATE_REGISTER_PER_IP": "1000/minute",
        "TREADLE_RATE_LOGIN_PER_IP": "1000/minute",
        # One registration per case: keep argon2's 64 MiB out of the API's peak RSS.
        "TREADLE_ARGON2_MEMORY_KIB": "8192",
        "TREADLE_ARGON2_TIME_COST": "1",
        "TREADLE_MAX_SUBSCRIPTIONS_PER_TENANT": "20000",  # W5b: 10,000 on one API
        "BENCH_TRACE_DIR": str(config.logs / "trace"),
        "TREADLE_EGRESS_ALLOW": "127.0.0.1",  # W6/W7 call the bench's sink on loopback
    }
    if queue is not None:
        values["REDIS_URL"] = config.redis_url
        values["TREADLE_QUEUE_NAME"] = queue
    return clean_env(values)


# --- the floor ---------------------------------------------------------------------------------


async def measure_floor(config: Config, worker_counts: list[int]) -> FloorResult:
    result = FloorResult()
    url = await create_database(config.pg_url, f"bench_{config.run_id}_floor")
    try:
        for _ in range(config.repeat):
            for clients in (1, 4):
                rate = await floor_mod.pg_commit_rate(url, clients, config.pg_seconds)
                add(result.pg, "pg", {f"commits_per_s_{clients}": rate})
                log(f"floor: PostgreSQL {clients} client(s): {rate:,.0f} commits/s")
    finally:
        await drop_database(config.pg_url, url)
    for workers in worker_counts:
        result.taskiq[workers] = await _taskiq_floor(config, workers)
    return result


async def _taskiq_floor(config: Config, workers: int) -> report.Samples:
    samples: report.Samples = {}
    queue = f"bench:floor:{config.run_id}:{workers}"
    log_path = config.logs / f"floor-{workers}w.log"
    with floor_mod.floor_worker(config.redis_url, queue, workers, log_path) as proc:
        proc.wait_children(workers)
        await floor_mod.wait_listeners(config.redis_url, workers)
        client = await floor_mod.FloorClient.open(config.redis_url, queue)
        try:
            await client.chains(30, 3)
            for _ in range(10):
                await client.chain(1)
            memory = proc.memory()
            idle = {"worker_idle": max(memory.children_rss())}
            add(samples, "rss", idle | {"worker_idle_pss": max(memory.children_pss())})
            for _ in range(config.repeat):
                hops = [await client.chain(1) * 1000 for _ in range(config.sizes.w1_runs)]
                add(samples, "W1", _latency(hops))
                total = await client.chain(config.sizes.w2_steps)
                steps = config.sizes.w2_steps
                add(samples, "W2", {"total_s": total, "per_step_ms": total * 1000 / steps})
                count = config.sizes.w3_runs
                total = await client.chains(count, workloads.W3_CHAIN)
                add(
                    samples,
                    "W3",
                    {
                        "total_s": total,
                        "steps_per_s": count * workloads.W3_CHAIN / total,
                        "runs_per_s": count / total,
                    },
                )
                add(samples, "W4", {"total_s": await client.fan_out(config.sizes.w4_width)})
            add(samples, "rss", {"worker_peak": max(proc.memory().children_hwm())})
        finally:
            await client.aclose()
    summary = report.stats(samples)
    log(
        f"floor: taskiq {workers}w: hop p50 {summary['W1']['p50_ms'].median:.2f} ms,"
        f" W2 {summary['W2']['per_step_ms'].median:.2f} ms/step,"
        f" W3 {summary['W3']['steps_per_s'].median:,.0f} steps/s,"
        f" W4 {summary['W4']['total_s'].median * 1000:.0f} ms"
    )
    return samples


def _latency(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": workloads.percentile(values_ms, 50),
        "p95_ms": workloads.percentile(values_ms, 95),
        "p99_ms": workloads.percentile(values_ms, 99),
    }


# --- the cases ---------------------------------------------------------------------------------


async def run_case(name: str, config: Config) -> CaseResult:
    workers = CASES[name]
    result = CaseResult(name, TITLES[name], workers)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    if name == "embedded":
        database_url = f"sqlite+aiosqlite:///{config.logs / 'embedded.db'}"
        await asyncio.to_thread(_migrate, database_url)
        env = treadle_env(config, database_url, None, port)
        argv = _stepper(config, "dev")
        with Process("treadle dev", argv, env, config.logs / "embedded.log") as api:
            await wait_healthy(base_url, api)
            await _measure(result, config, base_url, api, None, None)
        return result
    database_url = await create_database(config.pg_url, f"bench_{config.run_id}_{name}")
    try:
        await asyncio.to_thread(_migrate, database_url)
        queue = f"treadle:bench:{config.run_id}:{name}"
        env = treadle_env(config, database_url, queue, port)
        argv = _stepper(config, "worker", "--processes", str(workers), "--grace", "10")
        with (
            Process("treadle serve", treadle("serve"), env, config.logs / f"{name}-api.log") as api,
            Process("treadle worker", argv, env, config.logs / f"{name}-worker.log") as worker,
        ):
            await wait_healthy(base_url, api)
            worker.wait_children(workers)
            await floor_mod.wait_listeners(config.redis_url, workers)
            await _measure(result, config, base_url, api, worker, database_url)
    finally:
        await drop_database(config.pg_url, database_url)
    return result


def _stepper(config: Config, *args: str) -> list[str]:
    """The command of the process that runs steps; with --profile it counts SQL round trips."""
    if config.profile:
        return [sys.executable, "-m", "bench.traced_worker", *args]
    return treadle(*args)


def _migrate(database_url: str) -> None:
    from treadle.migrate import upgrade

    upgrade(database_url)


async def _measure(
    result: CaseResult,
    config: Config,
    base_url: str,
    api_proc: Process,
    worker: Process | None,
    database_url: str | None,
) -> None:
    api = Api(base_url, observe=config.observe)
    sink = await Sink().start()
    try:
        if api.observe == "sse" and not await api.stream_supported():
            api.observe = "poll"
            result.notes.append("no SSE stream route: run ends observed by polling every 2 ms")
        suite = Workloads(api, config.sizes)
        await suite.setup()
        await suite.warm_up()
        _record_idle(result, api_proc, worker)
        w5_runner = workloads.load_w5()
        if w5_runner is None:
            result.notes.append("W5 not run: bench/w5_fanout.py (run()) is not there yet")
        run = CaseRun(
            config,
            result,
            suite,
            CpuMeter(api_proc, worker, config.pg_url, database_url),
            worker or api_proc,
            api_proc,
        )
        if {"W6", "W7"} & config.workloads:
            run.http = HttpWorkloads(api, sink.port, config.sizes.w3_runs)
            await run.http.setup()
        for repetition in range(1, config.repeat + 1):
            figures = await run.repetition(repetition)
            if (
                w5_runner is not None
                and "W5" in config.workloads
                and repetition <= config.w5_repeat
            ):
                figures["W5"] = await run_w5(result, api, api_proc, w5_runner, config)
            if (
                w5_runner is not None
                and "W5B" in config.workloads
                and repetition <= config.w5_repeat
            ):
                figures["W5B"] = await run_w5(result, api, api_proc, w5_runner, config, wide=True)
            for workload, values in figures.items():
                add(result.samples, workload, values)
            log(f"{result.title} #{repetition}: " + _brief(figures))
        _record_peak(result, api_proc, worker)
        note_load(result)
    finally:
        sink.close()
        await api.aclose()


def _record_idle(result: CaseResult, api: Process, worker: Process | None) -> None:
    values = {"api_idle": api.memory().root_rss}
    if worker is not None:
        memory = worker.memory()
        values["worker_idle"] = max(memory.children_rss())
        values["worker_idle_pss"] = max(memory.children_pss())
        values["worker_supervisor_idle"] = memory.root_rss
    else:
        result.notes.append("one process: the API's RSS includes the in-process worker")
    add(result.samples, "rss", values)


def _record_peak(result: CaseResult, api: Process, worker: Process | None) -> None:
    values = {"api_peak": next(iter(api.memory().hwm.values()), 0.0)}
    if worker is not None:
        memory = worker.memory()
        values["worker_peak"] = max(memory.children_hwm())
        values["worker_total_peak"] = memory.total_hwm
    add(result.samples, "rss", values)


def _brief(figures: dict[str, dict[str, Any]]) -> str:
    formats = {
        "W1": "W1 p50 {p50_ms:.1f} ms p99 {p99_ms:.1f} ms",
        "W2": "W2 {per_step_ms:.2f} ms/step",
        "W3": "W3 {steps_per_s:,.0f} steps/s",
        "W4": "W4 {total_s:.3f} s",
        "W5": "W5 p50 {p50_ms} ms p99 {p99_ms} ms",
        "W5B": "W5b p50 {p50_ms} ms p99 {p99_ms} ms",
        "W6": "W6 {per_step_ms:.2f} ms/step",
        "W7": "W7 {steps_per_s:,.0f} steps/s",
    }
    return "; ".join(formats[key].format(**figures[key]) for key in formats if key in figures)


# --- main --------------------------------------------------------------------------------------


def _meta(args: argparse.Namespace, config: Config) -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": commit,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "cases": args.cases,
        "repeat": config.repeat,
        "quick": args.quick,
        "observe": config.observe,
        "workloads": sorted(config.workloads),
        "w5_repeat": config.w5_repeat,
        "profile": config.profile,
        "sizes": asdict(config.sizes),
        "logs": str(config.logs),
    }


async def amain(args: argparse.Namespace) -> int:
    raise_fd_limit()  # W5b's 10,000 sockets; the API processes started later inherit it
    logs = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="treadle-bench-"))
    logs.mkdir(parents=True, exist_ok=True)
    config = Config(
        pg_url=args.pg_url,
        redis_url=args.redis_url,
        repeat=args.repeat,
        sizes=Sizes.quick() if args.quick else Sizes(),
        observe=args.observe,
        logs=logs,
        run_id=uuid.uuid4().hex[:8],
        pg_seconds=0.5 if args.quick else 2.0,
        profile=args.profile,
        workloads=args.only,
        w5_repeat=min(args.w5_repeat, args.repeat),
    )
    cases_text = ", ".join(args.cases)
    log(f"run {config.run_id}: {cases_text}, {config.repeat} repetition(s); logs in {logs}")
    flush_redis(config.redis_url)
    worker_counts = sorted({CASES[name] for name in args.cases} | {1})
    floor = FloorResult() if args.no_floor else await measure_floor(config, worker_counts)
    cases = []
    for name in args.cases:
        log(f"case {name}: starting")
        cases.append(await run_case(name, config))
    if config.profile:
        await asyncio.to_thread(profile_summaries, config, cases)
        for case in cases:
            case.notes.append("profiled with py-spy: W2 and W3 figures are perturbed")
    print(report.table(cases, floor))  # noqa: T201
    for case in cases:
        if case.name == "pg1":
            print("\nTargets (PG+Redis, 1 worker):")  # noqa: T201
            print("\n".join(report.target_lines(case)))  # noqa: T201
    doc = report.document(cases, floor, _meta(args, config))
    await asyncio.to_thread(Path(args.json).write_text, json.dumps(doc, indent=2) + "\n")
    log(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(amain(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
