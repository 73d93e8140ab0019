"""Services and processes for the benchmark: databases, ports, subprocesses and their memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import redis
from sqlalchemy.engine import make_url

from treadle.dbadmin import pg_dsn

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


# --- PostgreSQL and Redis ----------------------------------------------------------------------

# Database helpers live in treadle.dbadmin (shared with the tests and chaos runs).


def flush_redis(url: str) -> None:
    """Empty the benchmark's Redis database (only the one ``url`` names)."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- processes ---------------------------------------------------------------------------------


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without Treadle settings, plus ``extra``."""
    prefixes = ("TREADLE_", "DATABASE_", "REDIS_", "JWT_", "OPENAI_", "BENCH_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.pop("PORT", None)
    env.pop("HOST", None)
    env.pop("LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class Memory:
    """Memory of one process tree, in MiB, per process: now (VmRSS), peak (VmHWM), and the
    proportional set size (PSS: pages shared with the forking parent counted fractionally)."""

    rss: dict[int, float]
    hwm: dict[int, float]
    pss: dict[int, float]

    @property
    def root_rss(self) -> float:
        return next(iter(self.rss.values()), 0.0)

    def children_rss(self) -> list[float]:
        return list(self.rss.values())[1:]

    def children_pss(self) -> list[float]:
        return list(self.pss.values())[1:]

    def children_hwm(self) -> list[float]:
        return list(self.hwm.values())[1:]

    @property
    def total_hwm(self) -> float:
        return sum(self.hwm.values())


def _status_kib(pid: int, field: str, file: str = "status") -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def descendants(pid: int) -> list[int]:
    """``pid``'s child processes, grandchildren included, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        children = sorted(parents.get(queue.pop(0), []))
        found.extend(children)
        queue.extend(children)
    return found


_TICKS: float = float(os.sysconf("SC_CLK_TCK"))


def _stat_fields(pid: int) -> list[str]:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return []


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0.0
    for pid in pids:
        fields = _stat_fields(pid)
        if len(fields) > 12:
            total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def machine_busy_seconds() -> float:
    """CPU time all processors spent busy since boot (/proc/stat; idle and iowait excluded)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICKS


async def pg_backends(base_url: str, database_url: str) -> list[int]:
    """Server processes of the connections to ``database_url``'s database."""
    name = make_url(database_url).database
    conn = await asyncpg.connect(pg_dsn(base_url))
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await conn.close()
    return [int(row["pid"]) for row in rows]


def pids_named(name: str) -> list[int]:
    """Processes whose command name is ``name`` (e.g. the PostgreSQL and Redis servers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
    return found


class Process:
    """A subprocess in its own session (so a signal reaches its whole tree), logging to a file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.proc.pid

    def start(self) -> Process:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own argv
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tree(self) -> list[int]:
        return [self.pid, *descendants(self.pid)] if self.alive() else []

    def memory(self) -> Memory:
        pids = [self.pid, *descendants(self.pid)] if self.alive() else []
        rss = {pid: _status_kib(pid, "VmRSS") / 1024 for pid in pids}
        hwm = {pid: _status_kib(pid, "VmHWM") / 1024 for pid in pids}
        pss = {pid: _status_kib(pid, "Pss", "smaps_rollup") / 1024 for pid in pids}
        return Memory(rss, hwm, pss)

    def wait_children(self, count: int, timeout: float = 60) -> None:
        """Wait until the process has at least ``count`` descendants (a worker's processes)."""
        deadline = time.monotonic() + timeout
        while len(descendants(self.pid)) < count:
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start {count} child processes")
            time.sleep(0.1)

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited early; see {self.log}")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the process group this benchmark started, then SIGKILL it if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> Process:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def treadle(*args: str) -> list[str]:
    return [sys.executable, "-m", "treadle.cli", *args]


async def wait_healthy(base_url: str, proc: Process, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            proc.check()
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/api/health")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} at {base_url} did not become healthy; see {proc.log}")
