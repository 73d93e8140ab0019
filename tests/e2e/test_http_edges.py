"""HTTP edges a client or an attacker meets: wrong methods, trailing slashes, short bodies."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import make_settings
from tests.support.live import LiveServer


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/api/workflows/00000000-0000-0000-0000-000000000000", "DELETE, GET, HEAD, PUT"),
        ("DELETE", "/api/workflows", "GET, HEAD, POST"),
        ("GET", "/api/auth/login", "POST"),
        ("PUT", "/graphql", "GET, HEAD, POST"),
    ],
)
def test_wrong_method_on_a_real_route_is_405_with_allow(
    sqlite_server: str, method: str, path: str, allowed: str
) -> None:
    response = httpx.request(method, f"{sqlite_server}{path}")
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("path", ["/api/workflows/", "/api/health/", "/graphql/"])
def test_a_trailing_slash_is_not_redirected_to_the_callers_host(
    sqlite_server: str, path: str
) -> None:
    response = httpx.get(
        f"{sqlite_server}{path}", headers={"Host": "evil.example"}, follow_redirects=False
    )
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.json()["error"]["code"] == "NOT_FOUND"


def _raw(base_url: str) -> socket.socket:
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1"
    return socket.create_connection((parts.hostname, parts.port or 80), timeout=30)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


IDLE_SECONDS = 1.0


@pytest.fixture(scope="module")
def impatient(sqlite_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = make_settings(
        sqlite_url, tmp_path_factory.mktemp("impatient"), treadle_body_idle_seconds=IDLE_SECONDS
    )
    with LiveServer.api(settings) as server:
        yield server.base_url


@pytest.mark.parametrize("path", ["/api/auth/login", "/graphql", "/api/health"])
def test_a_body_that_stops_short_of_its_length_is_answered_400_and_closed(
    impatient: str, path: str
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 100\r\n\r\n"
    ).encode()
    with _raw(impatient) as sock:
        sock.sendall(head + b'{"email": "a')  # ... and nothing more, the socket left open
        started = time.monotonic()
        answer = _read_all(sock)  # returns only when the server closes the connection
        elapsed = time.monotonic() - started
    status = answer.split(b"\r\n", 1)[0]
    if path == "/api/health":  # a route that never reads a body answers at once
        assert status == b"HTTP/1.1 405 Method Not Allowed", answer[:300]
        return
    assert status == b"HTTP/1.1 400 Bad Request", answer[:300]
    assert b'"VALIDATION_ERROR"' in answer
    assert b"connection: close" in answer.lower()
    assert elapsed < IDLE_SECONDS + 10  # generous: before, the socket was held indefinitely


def test_a_client_that_vanishes_mid_body_is_no_server_error(
    sqlite_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    for path in ("/api/auth/login", "/graphql"):
        with _raw(sqlite_server) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{".encode()
            )
            time.sleep(0.3)  # the request is being read when the client goes
    time.sleep(0.5)
    assert httpx.get(f"{sqlite_server}/api/health", timeout=10).status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
