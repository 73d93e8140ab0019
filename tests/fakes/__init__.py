"""Test doubles shared by the suite: in-process servers that only ever listen on loopback."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp

from tests.support.live import serve

__all__ = ["serve_app"]


@contextmanager
def serve_app(app: ASGIApp, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of loopback ``host``; yields the base URL.

    The server runs in its own thread and event loop, so sync and async tests can both use it.
    """
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"test servers bind loopback only, not {host}")
    with serve(app, host=host, lifespan="off") as url:
        yield url
