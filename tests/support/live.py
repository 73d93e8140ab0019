"""Real servers for tests: uvicorn on loopback in a thread, and `treadle worker` processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
import uvicorn
from starlette.types import ASGIApp

from treadle.app import create_app
from treadle.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def serve(app: ASGIApp, *, host: str = "127.0.0.1", lifespan: str = "on") -> Iterator[str]:
    """Serve ``app`` with uvicorn (HTTP + websockets) on a free loopback port; yield its URL."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan=lifespan,
        loop="asyncio",
        ws="websockets-sansio",
        proxy_headers=False,  # as `treadle serve`: the app honours TREADLE_TRUSTED_PROXIES
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        yield f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


class LiveServer:
    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._cm: contextlib.AbstractContextManager[str] | None = None
        self.base_url = ""

    @classmethod
    def embedded(cls, settings: Settings) -> LiveServer:
        return cls(create_app(settings, embedded_worker=True))

    @classmethod
    def api(cls, settings: Settings) -> LiveServer:
        return cls(create_app(settings))

    def __enter__(self) -> LiveServer:
        self._cm = serve(self._app)
        self.base_url = self._cm.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._cm is not None
        self._cm.__exit__(exc_type, exc, tb)


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process build the same ``Settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TREADLE_", "DATABASE_"))}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    return env


class WorkerProcess:
    """A real ``treadle worker`` process (its own process group, so kills reach all of it)."""

    def __init__(
        self, settings: Settings, *, log: Path | None = None, args: Sequence[str] = ()
    ) -> None:
        self.settings = settings
        self.log = log
        self.args = list(args)  # more `treadle worker` options, e.g. ["--processes", "2"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with contextlib.ExitStack() as stack:
            out: int | IO[bytes] = subprocess.DEVNULL
            if self.log:
                out = stack.enter_context(open(self.log, "ab"))  # the child keeps its own copy
            self.proc = subprocess.Popen(  # noqa: S603 - our CLI, arguments chosen by tests
                [sys.executable, "-m", "treadle.cli", "worker", "--grace", "10", *self.args],
                env=settings_env(self.settings),
                cwd=ROOT,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        return self

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        stop_group(self.proc, timeout=20)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ApiProcess:
    """A real ``treadle serve`` process on a free loopback port, its output kept in ``log``."""

    def __init__(self, settings: Settings, *, log: Path) -> None:
        self.settings = settings.model_copy(update={"host": "127.0.0.1", "port": free_port()})
        self.log = log
        self.base_url = f"http://127.0.0.1:{self.settings.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ApiProcess:
        with open(self.log, "ab") as out:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "treadle.cli", "serve"],
                env=settings_env(self.settings),
                cwd=ROOT,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        try:
            wait_healthy(self.base_url)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        stop_group(self.proc, timeout=30)


def stop_group(proc: subprocess.Popen[bytes] | None, *, timeout: float) -> None:
    """SIGTERM a child started with ``start_new_session`` (its whole group), SIGKILL it if it
    has not exited within ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_healthy(base_url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/api/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{base_url} did not become healthy")
