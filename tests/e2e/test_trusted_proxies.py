"""Per-IP limits count the real peer: ``X-Forwarded-For`` is honoured from trusted proxies only.

These run the real ``treadle serve`` process (uvicorn as production starts it), since the
trap was uvicorn's own default of trusting the header from any loopback peer.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import make_settings
from tests.support.live import ROOT, settings_env, wait_healthy

LIMIT = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def treadle_serve(sqlite_url: str, data: Path, trusted: str) -> Iterator[str]:
    port = _free_port()
    settings = make_settings(
        sqlite_url,
        data,
        host="127.0.0.1",
        port=port,
        treadle_rate_login_per_ip=f"{LIMIT}/minute",
        treadle_trusted_proxies=trusted,
    )
    log = data / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "treadle.cli", "serve"],
            env=settings_env(settings),
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_healthy(base_url, timeout=60)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _statuses(base_url: str) -> list[int]:
    """Login attempts, each claiming another client address in ``X-Forwarded-For``."""
    body = {"email": "nobody@example.test", "password": "not the password"}
    return [
        httpx.post(
            f"{base_url}/api/auth/login", json=body, headers={"X-Forwarded-For": f"203.0.113.{i}"}
        ).status_code
        for i in range(LIMIT + 1)
    ]


def test_by_default_the_forwarded_header_is_ignored(
    sqlite_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with treadle_serve(sqlite_url, tmp_path_factory.mktemp("untrusted"), trusted="") as url:
        # All four come from 127.0.0.1, whatever they claim: the fourth is over the limit.
        assert _statuses(url) == [401] * LIMIT + [429]


def test_a_trusted_proxy_names_the_client(
    sqlite_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = tmp_path_factory.mktemp("trusted")
    with treadle_serve(sqlite_url, data, trusted="10.0.0.0/8, 127.0.0.1") as url:
        # Each claims a different client, and the loopback proxy is trusted: none is limited.
        assert _statuses(url) == [401] * (LIMIT + 1)
