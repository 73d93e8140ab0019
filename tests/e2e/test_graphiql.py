"""GraphiQL works offline: headless Chromium loads the page, runs a query, and fetches nothing
but the server's own files.

Chromium is driven over the DevTools protocol (a few commands on a websocket). Its resolver
maps every host but 127.0.0.1 to "not found", so a page that needed a CDN would stay at
"Loading" and the test would fail; the requests it made are also checked one by one.
Skipped, saying why, when Debian's ``chromium`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--remote-debugging-port=0",
]
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it)",
)


class Page:
    """One browser tab over a flattened DevTools session."""

    def __init__(self, conn: ClientConnection, session: str) -> None:
        self.conn, self.session = conn, session
        self.requests: list[str] = []
        self._ids = itertools.count(1000)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        return await _call(self.conn, method, params, session=self.session, page=self)

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return reply.get("result", {}).get("value")

    async def wait_for(self, expression: str, seconds: float = 60) -> Any:
        """Poll ``expression`` in the page until it is truthy; return its value."""
        deadline = time.monotonic() + seconds
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                body = await self.evaluate("document.body && document.body.innerText")
                raise AssertionError(f"timed out waiting for {expression!r}; page: {body!r}")
            await asyncio.sleep(0.2)
        return value


_counter = itertools.count(1)


async def _call(
    conn: ClientConnection,
    method: str,
    params: dict[str, Any],
    *,
    session: str | None = None,
    page: Page | None = None,
) -> dict[str, Any]:
    """Send one command; note the tab's network requests while waiting for its answer."""
    message_id = next(_counter)
    message: dict[str, Any] = {"id": message_id, "method": method, "params": params}
    if session:
        message["sessionId"] = session
    await conn.send(json.dumps(message))
    while True:
        reply = json.loads(await asyncio.wait_for(conn.recv(), 60))
        if reply.get("method") == "Network.requestWillBeSent" and page is not None:
            page.requests.append(reply["params"]["request"]["url"])
        if reply.get("id") == message_id:
            if "error" in reply:
                raise AssertionError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply.get("result", {})
            return result


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Page]:
    assert CHROMIUM is not None
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
            assert proc.returncode is None, "chromium exited at start"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        async with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, proxy=None) as conn:
            target = await _call(conn, "Target.createTarget", {"url": "about:blank"})
            attached = await _call(
                conn, "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
            )
            page = Page(conn, attached["sessionId"])
            await page.call("Network.enable")
            await page.call("Runtime.enable")
            yield page
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


async def test_graphiql_runs_a_query_offline(sqlite_server: str, tmp_path: Path) -> None:
    async with httpx.AsyncClient() as http:
        page_html = (
            await http.get(f"{sqlite_server}/graphql", headers={"Accept": "text/html"})
        ).text
    assert "unpkg.com" not in page_html
    assert "cdn" not in page_html.lower()
    query = "{ health { status database } }"
    url = f"{sqlite_server}/graphql?q={quote(query)}"  # ?query= would run it as GET /graphql
    async with chromium(tmp_path / "profile") as page:
        await page.call("Page.navigate", url=url)
        await page.wait_for("document.querySelector('.graphiql-execute-button') !== null")
        await page.evaluate("document.querySelector('.graphiql-execute-button').click()")
        result = await page.wait_for(
            "(document.querySelector('.result-window') || {}).innerText || ''"
        )
        deadline = time.monotonic() + 30
        while '"ok"' not in result:
            assert time.monotonic() < deadline, f"no result: {result!r}"
            await asyncio.sleep(0.2)
            result = await page.evaluate("document.querySelector('.result-window').innerText")
    assert '"health"' in result
    assert '"status": "ok"' in result
    origin = urlsplit(sqlite_server).netloc
    outside = [u for u in page.requests if urlsplit(u).netloc not in (origin, "")]
    assert not outside, outside
    assert any(u.endswith("/static/graphiql/graphiql.min.js") for u in page.requests)
