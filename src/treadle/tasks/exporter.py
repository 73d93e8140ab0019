"""The worker's metrics port: one HTTP endpoint summing every worker process on this machine.

``treadle worker --processes N`` forks N Taskiq processes. Each records into files in a shared
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode) and the parent, which runs no
steps, serves their sum on ``TREADLE_WORKER_METRICS_PORT``; one scrape target per machine.

The directory must be in the environment before ``prometheus_client`` is first imported in the
parent (it picks its value class at import time and the children inherit it by fork), so this
module imports it only inside ``serve_worker_metrics``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from treadle.errors import TreadleError
from treadle.settings import Settings

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[str]:
    """The operator's PROMETHEUS_MULTIPROC_DIR, else a fresh one removed on exit."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        yield given
        return
    path = tempfile.mkdtemp(prefix="treadle-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def _app(
    settings: Settings, path: str
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    from treadle.metrics import CONTENT_TYPE, check_metrics_token, render_multiprocess

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        try:
            check_metrics_token(
                settings.treadle_metrics_token,
                settings.is_production,
                environ.get("HTTP_AUTHORIZATION"),
            )
        except TreadleError as exc:
            start_response(f"{exc.http_status} {exc.code}", [("Content-Type", "text/plain")])
            return [exc.message.encode() + b"\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE)])
        return [render_multiprocess(path)]

    return app


@contextlib.contextmanager
def serve_worker_metrics(settings: Settings) -> Iterator[int]:
    """Serve ``/metrics`` for this machine's worker processes; yields the bound port."""
    port = settings.treadle_worker_metrics_port or 0
    host = settings.treadle_worker_metrics_host
    with multiprocess_dir() as path:
        server_class = _Server6 if ":" in host else _Server
        server = make_server(
            host, port, _app(settings, path), server_class, handler_class=_QuietHandler
        )
        thread = threading.Thread(target=server.serve_forever, name="treadle-metrics", daemon=True)
        thread.start()
        bound = int(server.server_address[1])
        logger.info("worker metrics on http://%s:%d/metrics", host, bound)
        try:
            yield bound
        finally:
            server.shutdown()
            server.server_close()
