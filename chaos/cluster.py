"""The processes under test: a PostgreSQL database, a private Redis, APIs, workers and a sink.

Every child runs in its own session (process group), so a SIGKILL reaches all of it (the taskiq
worker forks a child) and a Ctrl-C in the terminal reaches only this harness, which then stops
them all itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import redis

from tests.fakes import serve_app
from tests.fakes.sink import Sink
from treadle.dbadmin import admin_execute, create_database, drop_database

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
_SETTING_PREFIXES = ("TREADLE_", "DATABASE_", "REDIS_", "JWT_", "OPENAI_")


def require_loopback(host: str | None, what: str) -> None:
    """Refuse anything that is not a loopback address: the harness never leaves the machine."""
    if not host or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"chaos: {what} must be on loopback, not {host}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# --- PostgreSQL --------------------------------------------------------------------------------


@dataclass
class Database:
    """A database created beside ``base_url``'s for this run only."""

    base_url: str
    name: str = field(default_factory=lambda: f"treadle_chaos_{secrets.token_hex(4)}")
    url: str = ""

    def create(self) -> str:
        from treadle.migrate import upgrade

        self.url = asyncio.run(create_database(self.base_url, self.name))
        upgrade(self.url)
        return self.url

    async def terminate_backends(self) -> int:
        """``pg_terminate_backend`` every connection to this database; how many there were."""
        rows = await admin_execute(
            self.base_url,
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            self.name,
        )
        return sum(1 for row in rows if row["ok"])

    def drop(self) -> None:
        if not self.url:
            return

        asyncio.run(drop_database(self.base_url, self.url))
        self.url = ""


# --- child processes ---------------------------------------------------------------------------


class Child:
    """One subprocess in its own process group, its output appended to ``log``."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, dict(env), log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with open(self.log, "ab") as out:
            out.write(f"\n--- start #{self.starts + 1} at {time.time():.3f}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(  # noqa: S603 - argv built here, no shell
                self.argv,
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group and reap the leader."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the group, then SIGKILL it after ``grace`` seconds (always, for stragglers)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace)
        self.kill()  # the group may outlive its leader (forked workers)


class RedisServer(Child):
    """A private, non-persistent ``redis-server``; restarting it empties it."""

    def __init__(self, port: int, log: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("chaos: redis-server is not installed")
        argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning"]
        super().__init__("redis", argv, os.environ, log)
        self.port = port
        self.url = f"redis://{HOST}:{port}/0"

    def wait_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=HOST, port=self.port, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError("redis-server did not start")


class Api(Child):
    def __init__(self, index: int, env: Mapping[str, str], log: Path) -> None:
        self.port = free_port()
        full = {**env, "HOST": HOST, "PORT": str(self.port)}
        super().__init__(f"api{index}", [sys.executable, "-m", "treadle.cli", "serve"], full, log)
        self.url = f"http://{HOST}:{self.port}"

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=2) as client:
            while time.monotonic() < deadline:
                if not self.alive:
                    raise RuntimeError(f"{self.name} exited; see {self.log}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/api/health").status_code == 200:
                        return
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not become healthy; see {self.log}")


class Worker(Child):
    def __init__(self, index: int, env: Mapping[str, str], log: Path) -> None:
        argv = [sys.executable, "-m", "treadle.cli", "worker", "--grace", "5"]
        super().__init__(f"worker{index}", argv, env, log)


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without Treadle settings or proxies, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SETTING_PREFIXES)
        and k.lower() not in {"http_proxy", "https_proxy", "all_proxy", "port", "host"}
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Cluster:
    """Everything started for one chaos run; ``close`` stops it all (idempotent)."""

    log_dir: Path
    db: Database
    redis: RedisServer | None = None
    apis: list[Api] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    sink: Sink | None = None
    sink_url: str = ""
    sink_server: contextlib.AbstractContextManager[str] | None = None

    def serve_sink(self) -> Sink:
        """The recording sink, in a uvicorn thread of this process."""
        self.sink = Sink()
        self.sink_server = serve_app(self.sink.app)
        self.sink_url = self.sink_server.__enter__()
        return self.sink

    def children(self) -> Iterator[Child]:
        yield from self.workers
        yield from self.apis
        if self.redis is not None:
            yield self.redis

    def close(self, out: IO[str] | None = None) -> None:
        problems: list[str] = []
        for worker in self.workers:
            worker.kill()  # no grace: the run is over, nothing to finish
        for child in self.children():
            try:
                child.stop(grace=5)
            except Exception as exc:  # keep stopping the others
                problems.append(f"{child.name}: {exc}")
        if self.sink_server is not None:
            with contextlib.suppress(Exception):
                self.sink_server.__exit__(None, None, None)
            self.sink_server = None
        try:
            self.db.drop()
        except Exception as exc:
            problems.append(f"dropping {self.db.name}: {exc}")
        for problem in problems:
            print(f"chaos: cleanup: {problem}", file=out or sys.stderr)
