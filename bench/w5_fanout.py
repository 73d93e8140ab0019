"""W5/W5b: live fan-out. N concurrent ``runEvents`` subscribers on one run (W5) or spread over
R runs (W5b: 10,000 over 100), over real websockets, on ONE API process.

``run(base_url, token, subscribers, runs=1)`` measures against a running API (and its worker):

1. opens N graphql-transport-ws sockets (``connection_init`` with the token) with a lean
   client (``bench.lean_ws``: frames stamped on arrival, JSON parsed afterwards, so the
   figures measure the server, not a client library);
2. starts R runs of a workflow that first waits (a ``DELAY`` until a time chosen so every
   subscriber is attached by then) and then runs a chain of ``TRANSFORM`` steps;
3. subscribes every socket to its run (history replay, then live);
4. for each event committed after all subscribers were attached, takes receive time minus the
   event's ``createdAt`` (set in the transaction that commits it, on this machine's clock):
   commit → client delivery, p50/p99 over every (event, subscriber) pair;
5. memory per connection: the API process's RSS (``/proc``) after attaching minus before
   connecting, divided by N.

Every subscriber must see seq 1..last exactly once and then ``complete``; the result says how
many did not. ``python -m bench.w5_fanout`` starts its own ``treadle serve`` and ``treadle
worker`` on a fresh PostgreSQL database and Redis, runs once, prints a table and returns the
dict.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx

from bench.lean_ws import LeanSocket, open_socket

PROTOCOL: Final = "graphql-transport-ws"
QUERY: Final = (
    "subscription($r: ID!) { runEvents(runId: $r) { seq type createdAt } }"  # afterSeq = 0
)
STEPS: Final = 20
CONNECT_CONCURRENCY: Final = 64


@dataclass(slots=True)
class Subscriber:
    """One socket and its one ``runEvents`` subscription (id "1"), on the lean client."""

    run_id: str = ""
    sock: LeanSocket | None = None
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    first: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    completed: bool = False
    error: str | None = None
    seqs: list[int] = field(default_factory=list)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (createdAt, received)

    def on_text(self, sock: LeanSocket, payload: bytes) -> None:
        """Classify a frame by substring (JSON is parsed after the run, in ``settle``)."""
        if b'"type":"ping"' in payload:
            sock.send_text('{"type":"pong"}')
        elif not self.acked.is_set():
            self.acked.set()
        elif b'"type":"next"' in payload:
            self.first.set()
        elif b'"type":"complete"' in payload or b'"type":"error"' in payload:
            self.completed = b'"type":"complete"' in payload
            self.error = None if self.completed else payload.decode()[:300]
            self.first.set()
            self.done.set()

    def settle(self) -> None:
        """Parse the kept ``next`` frames: seqs in order, and (createdAt, received) pairs."""
        frames = self.sock.frames if self.sock is not None else []
        for received, payload in frames:
            if b'"type":"next"' not in payload:
                continue
            body = json.loads(payload)["payload"]
            if body.get("errors") or not body.get("data"):
                self.error = json.dumps(body.get("errors"))[:300]
                continue
            event = body["data"]["runEvents"]
            if event["seq"] is not None:
                self.seqs.append(event["seq"])
                self.latencies.append((_timestamp(event["createdAt"]), received))


# --- the API process's memory -----------------------------------------------------------------


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def listening_pid(port: int) -> int | None:
    """The process with a socket listening on ``port`` (Linux /proc), if it can be seen."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{parts[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                if str(fd.readlink()) in inodes:
                    return int(proc.name)
    return None


def cpu_seconds_of(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` so far (Linux /proc)."""
    if pid is None:
        return None
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Raise this process's (and its future children's) open-file limit toward ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


# --- subscribers ------------------------------------------------------------------------------


async def _open_all(url: str, token: str, subs: list[Subscriber]) -> None:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    init = json.dumps({"type": "connection_init", "payload": {"token": token}})

    async def one(sub: Subscriber) -> None:
        async with gate:
            sub.sock = await open_socket(url, PROTOCOL, sub.on_text)
            sub.sock.send_text(init)
            await sub.acked.wait()

    await asyncio.gather(*(one(s) for s in subs))


async def _subscribe_all(subs: list[Subscriber]) -> None:
    """Subscribe every socket, at most ``CONNECT_CONCURRENCY`` awaiting their history at once."""
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(sub: Subscriber) -> None:
        if sub.sock is None:
            raise RuntimeError("subscribe before connecting")
        payload = {"query": QUERY, "variables": {"r": sub.run_id}}
        async with gate:
            sub.sock.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            await sub.first.wait()

    await asyncio.gather(*(one(s) for s in subs))


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- the workload -----------------------------------------------------------------------------


def workflow(steps: int) -> dict[str, Any]:
    """Wait until ``input.until``, then ``steps`` chained transforms (2 events each)."""
    nodes: list[dict[str, Any]] = [
        {"id": "gate", "type": "DELAY", "config": {"until": "{{ input.until }}"}}
    ]
    nodes += [
        {"id": f"s{i}", "type": "TRANSFORM", "config": {"output": {"i": i}}} for i in range(steps)
    ]
    edges = [{"from": a["id"], "to": b["id"]} for a, b in itertools.pairwise(nodes)]
    return {"nodes": nodes, "edges": edges}


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _start_runs(
    http: httpx.AsyncClient, steps: int, hold_seconds: float, count: int
) -> list[str]:
    """``count`` runs of one workflow, each waiting until the same moment, then ``steps``."""
    body = {"name": f"bench W5 fan-out {uuid.uuid4().hex[:6]}", "definition": workflow(steps)}
    created = (await http.post("/api/workflows", json=body)).raise_for_status().json()
    until = (datetime.now(UTC) + timedelta(seconds=hold_seconds)).isoformat()
    run_ids = []
    for _ in range(count):
        started = await http.post(
            f"/api/workflows/{created['id']}/execute", json={"input": {"until": until}}
        )
        run_ids.append(str(started.raise_for_status().json()["id"]))
    return run_ids


async def run(
    base_url: str,
    token: str,
    subscribers: int = 1000,
    *,
    runs: int = 1,
    steps: int = STEPS,
    api_pid: int | None = None,
    hold_seconds: float | None = None,
) -> dict[str, Any]:
    """Measure W5 once against the API at ``base_url``; see the module docstring.

    ``runs``: the subscribers are spread round-robin over this many runs (W5b: 10,000 over 100).
    ``hold_seconds``: how long the runs wait before their first step, so that every subscriber
    is attached before events flow (default: 5 s + 25 ms per subscriber, at most 300 s).
    """
    raise_fd_limit(subscribers + 1024)
    hold = hold_seconds if hold_seconds is not None else min(300.0, 5.0 + 0.025 * subscribers)
    pid = api_pid or listening_pid(httpx.URL(base_url).port or 80)
    ws_url = base_url.replace("http", "ws", 1) + "/graphql"
    headers = {"Authorization": f"Bearer {token}"}
    subs = [Subscriber() for _ in range(subscribers)]
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as http:
        rss_before = rss_mb(pid)
        began = time.perf_counter()
        try:
            await asyncio.wait_for(_open_all(ws_url, token, subs), 300)
            connect_s = time.perf_counter() - began
            run_ids = await _start_runs(http, steps, hold, runs)
            for n, sub in enumerate(subs):
                sub.run_id = run_ids[n % runs]
            began = time.perf_counter()
            await asyncio.wait_for(_subscribe_all(subs), hold)
            attached_at, attach_s = time.time(), time.perf_counter() - began
            rss_attached, cpu_attached = rss_mb(pid), cpu_seconds_of(pid)
            await asyncio.wait_for(asyncio.gather(*(s.done.wait() for s in subs)), 300 + hold)
            cpu_done = cpu_seconds_of(pid)
            busy = _busy(cpu_attached, cpu_done, time.time() - attached_at)
        finally:
            for sub in subs:
                if sub.sock is not None:
                    sub.sock.close()
    for sub in subs:
        sub.settle()
    result = _summary(subs, attached_at, connect_s, attach_s, rss_before, rss_attached)
    result["runs"] = runs
    result["hold_s"] = round(hold, 1)
    # The API is one single-threaded process: everything above was served by at most one core.
    result["api_cores_busy"] = busy
    # The API's CPU from attach to the last ``complete`` (mostly the fan-out) per delivery.
    result["api_cpu_us_per_delivery"] = _per_delivery(
        cpu_attached, cpu_done, result["live_deliveries"]
    )
    result["subscribers_per_api_core"] = subscribers
    return result


def _per_delivery(before: float | None, after: float | None, deliveries: int) -> float | None:
    if before is None or after is None or not deliveries:
        return None
    return round((after - before) * 1e6 / deliveries, 2)


def _busy(before: float | None, after: float | None, wall_s: float) -> float | None:
    """Average cores the API used from attach to the last ``complete`` (hold time included)."""
    if before is None or after is None or wall_s <= 0:
        return None
    return round((after - before) / wall_s, 3)


def _summary(
    subs: list[Subscriber],
    attached_at: float,
    connect_s: float,
    attach_s: float,
    rss_before: float | None,
    rss_attached: float | None,
) -> dict[str, Any]:
    last = max((s.seqs[-1] for s in subs if s.seqs), default=0)  # every run has as many
    bad = sum(1 for s in subs if not s.completed or s.seqs != list(range(1, last + 1)))
    live_ms = [
        (received - created) * 1000
        for s in subs
        for created, received in s.latencies
        if created >= attached_at
    ]
    per_conn = None
    if rss_before is not None and rss_attached is not None and subs:
        per_conn = (rss_attached - rss_before) / len(subs)
    errors = sorted({s.error for s in subs if s.error})
    return {
        "subscribers": len(subs),
        "events": last,
        "live_deliveries": len(live_ms),
        "incomplete_or_gapped": bad,
        "connect_s": round(connect_s, 3),
        "attach_s": round(attach_s, 3),
        "p50_ms": round(percentile(live_ms, 50), 2),
        "p99_ms": round(percentile(live_ms, 99), 2),
        "max_ms": round(max(live_ms, default=float("nan")), 2),
        "mean_ms": round(statistics.fmean(live_ms), 2) if live_ms else None,
        "rss_before_mb": None if rss_before is None else round(rss_before, 1),
        "rss_attached_mb": None if rss_attached is None else round(rss_attached, 1),
        "mb_per_connection": None if per_conn is None else round(per_conn, 4),
        "errors": errors[:3],
    }


def table(result: dict[str, Any]) -> str:
    width = max(len(key) for key in result)
    return "\n".join(f"{key:<{width}}  {value}" for key, value in result.items())


# --- standalone: python -m bench.w5_fanout ----------------------------------------------------


def _settings_env(
    args: argparse.Namespace, database_url: str, port: int, logs: Path
) -> dict[str, str]:
    """Production-like settings for the API and worker processes (high rate limits)."""
    from bench.procs import clean_env

    return clean_env(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": args.redis_url,
            "TREADLE_QUEUE_NAME": f"treadle:w5:{uuid.uuid4().hex[:8]}",
            "JWT_SECRET": "w5-bench-secret-" + "x" * 40,
            "TREADLE_ENV": "production",
            "LOG_LEVEL": "warning",
            "PORT": str(port),
            "TREADLE_DATA_DIR": str(logs / "data"),
            "TREADLE_MAX_SUBSCRIPTIONS_PER_TENANT": str(args.subscribers * 2),
            "TREADLE_RATE_API_PER_TENANT": "10000000/minute",
            "TREADLE_RATE_EXECUTE_PER_TENANT": "10000000/minute",
            "TREADLE_ARGON2_MEMORY_KIB": "8192",
            "TREADLE_ARGON2_TIME_COST": "1",
        }
    )


async def _standalone(args: argparse.Namespace) -> dict[str, Any]:
    from bench.procs import Process, free_port, treadle, wait_healthy
    from treadle.dbadmin import create_database, drop_database

    raise_fd_limit(args.subscribers + 1024)  # before the API process starts: it inherits it
    logs = Path(tempfile.mkdtemp(prefix="w5-"))
    database_url = await create_database(args.pg_url, f"bench_w5_{uuid.uuid4().hex[:8]}")
    port = free_port()
    env = _settings_env(args, database_url, port, logs)
    try:
        migrate = await asyncio.create_subprocess_exec(*treadle("migrate"), env=env)
        if await migrate.wait() != 0:
            raise RuntimeError("treadle migrate failed")
        base_url = f"http://127.0.0.1:{port}"
        with (
            Process("treadle serve", treadle("serve"), env, logs / "api.log") as api,
            Process("treadle worker", treadle("worker"), env, logs / "worker.log"),
        ):
            await wait_healthy(base_url, api)
            token = await _register(base_url)
            return await run(
                base_url,
                token,
                args.subscribers,
                runs=args.runs,
                steps=args.steps,
                api_pid=api.pid,
                hold_seconds=args.hold,
            )
    finally:
        await drop_database(args.pg_url, database_url)


async def _register(base_url: str) -> str:
    body = {
        "tenantName": "W5",
        "email": f"w5-{uuid.uuid4().hex[:8]}@bench.test",
        "password": "bench password",
        "name": "W5",
    }
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        response = await http.post("/api/auth/register", json=body)
        return str(response.raise_for_status().json()["token"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run W5 once on its own API + worker; print the table; return the figures."""
    import os

    parser = argparse.ArgumentParser(prog="python -m bench.w5_fanout")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="spread subscribers over N runs")
    parser.add_argument("--steps", type=int, default=STEPS, help="TRANSFORM steps per run")
    parser.add_argument("--hold", type=float, default=None, help="seconds before the first step")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL") or "postgresql+asyncpg://root@127.0.0.1:5432/test",
    )
    parser.add_argument(
        "--redis-url", default=os.environ.get("BENCH_REDIS_URL") or "redis://127.0.0.1:6379/14"
    )
    result = asyncio.run(_standalone(parser.parse_args(argv)))
    print(table(result))  # noqa: T201
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
