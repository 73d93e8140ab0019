"""The steps' HTTP client, built when a step first sends a request.

httpx (with the CLI extras it pulls in: rich, click, pygments) costs a worker process several
MB of memory; a worker whose steps never call out should not pay it. ``open_resources`` hands
steps a ``LazyHttpClient``; the guarded client (``treadle.net.egress``) and httpx are imported
on the first ``stream`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from treadle.engine.json import JSON
from treadle.net.address import EgressPolicy

if TYPE_CHECKING:
    import httpx


class LazyHttpClient:
    """An ``engine.steps.HttpClient`` that builds the real client with ``build`` on first use."""

    def __init__(self, build: Callable[[], httpx.AsyncClient]) -> None:
        self._build = build
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def guarded(cls, policy: EgressPolicy) -> LazyHttpClient:
        """The egress-guarded client of ``treadle.net.egress.build_http_client``, made lazily."""

        def build() -> httpx.AsyncClient:
            from treadle.net.egress import build_http_client

            return build_http_client(policy)

        return cls(build)

    @property
    def built(self) -> bool:
        """Whether the real client (and httpx) has been loaded."""
        return self._client is not None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = self._build()
        return self._client

    def stream(
        self,
        method: str,
        url: httpx.URL,
        *,
        headers: Mapping[str, str],
        timeout: float,
        json: JSON = None,
        content: bytes | None = None,
    ) -> AbstractAsyncContextManager[httpx.Response]:
        return self.client.stream(
            method, url, headers=headers, timeout=timeout, json=json, content=content
        )

    async def aclose(self) -> None:
        """Close the real client if it was ever built (a client never built has nothing open)."""
        if self._client is not None:
            await self._client.aclose()
