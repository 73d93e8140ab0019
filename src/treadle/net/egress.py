"""Egress guard: the only way HTTP and webhook steps reach the network.

Workflow authors choose the URLs, so every request is treated as hostile: the host is resolved
once, every answer is classified, and the connection is pinned to a checked address so a second
DNS lookup (rebinding) cannot swap in an internal one. Redirects are separate requests through
the same transport, so each hop is checked again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Final, Protocol

import httpx

from treadle.engine.steps import PermanentStepError, RetryableStepError
from treadle.net.address import (
    EgressPolicy,
    IPAddress,
    IPNetwork,
    classify_address,
    normalize_host,
    parse_ip_literal,
)

__all__ = [
    "EgressDeniedError",
    "EgressPolicy",
    "GuardedTransport",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "SystemResolver",
    "build_http_client",
    "check_address",
    "classify_address",
    "normalize_host",
    "parse_ip_literal",
    "resolve",
]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class EgressDeniedError(PermanentStepError):
    """A step tried to reach an address that egress policy forbids; never retried."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="EGRESS_DENIED")


def check_address(host: str, ip: IPAddress, policy: EgressPolicy) -> None:
    """Refuse ``ip`` (an address of ``host``) unless it is public or allowed by ``policy``.

    Raises:
        EgressDeniedError: the address is loopback, private, link-local, multicast, reserved,
            unspecified, shared, metadata or embeds such an IPv4 address, and is not allowed.
    """
    reason = classify_address(ip)
    if reason is None or policy.allows(host, ip):
        return
    # Name the host the author wrote, never the resolved address: that would leak internal DNS.
    raise EgressDeniedError(f"egress to {host!r} denied: destination is a {reason} address")


class Resolver(Protocol):
    """Turns a host name into address strings (tests inject fakes; no real DNS in unit tests)."""

    async def resolve(self, host: str, port: int) -> list[str]: ...


class SystemResolver:
    """The operating system's resolver via ``loop.getaddrinfo``."""

    async def resolve(self, host: str, port: int) -> list[str]:
        """Return the distinct addresses of ``host`` in resolver order."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def resolve(host: str, port: int, resolver: Resolver) -> list[IPAddress]:
    """Addresses of ``host``: a literal IP as is, otherwise the resolver's answers.

    Raises:
        EgressDeniedError: ``host`` is a malformed numeric address or the resolver answered junk.
        RetryableStepError: resolution failed (code ``NETWORK_ERROR``).
    """
    literal = _literal(host)
    if literal is not None:
        return [literal]
    try:
        answers = await resolver.resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise RetryableStepError(f"could not resolve {host!r}", code="NETWORK_ERROR") from exc
    try:
        addresses = [ipaddress.ip_address(answer) for answer in answers]
    except ValueError:
        raise EgressDeniedError(f"egress to {host!r} denied: unusable DNS answer") from None
    if not addresses:
        raise RetryableStepError(f"could not resolve {host!r}", code="NETWORK_ERROR")
    return addresses


def _literal(host: str) -> IPAddress | None:
    try:
        return parse_ip_literal(host)
    except ValueError:
        raise EgressDeniedError(f"egress to {host!r} denied: malformed address") from None


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks every request's destination, then sends it pinned to a checked address.

    Args:
        inner: the transport that really sends (``httpx.AsyncHTTPTransport``, or a mock in tests).
        policy: exceptions to the public-only rule.
        resolver: DNS; defaults to the system resolver.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        policy: EgressPolicy,
        resolver: Resolver | None = None,
    ) -> None:
        self._inner = inner
        self._policy = policy
        self._resolver: Resolver = resolver or SystemResolver()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Resolve, check every address, pin to the first and send.

        Raises:
            EgressDeniedError: bad scheme or any resolved address is denied.
            RetryableStepError: DNS failure or connection failure (code ``NETWORK_ERROR``).
        """
        url = request.url
        if url.scheme not in _DEFAULT_PORTS:
            raise EgressDeniedError(f"egress denied: scheme {url.scheme!r} is not http or https")
        host = normalize_host(url.raw_host.decode("ascii"))
        if not host:
            raise EgressDeniedError("egress denied: the URL has no host")
        port = url.port or _DEFAULT_PORTS[url.scheme]
        addresses = await self._resolve(host, port, request)
        for address in addresses:
            check_address(host, address, self._policy)
        try:
            return await self._inner.handle_async_request(_pin(request, host, addresses[0]))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise RetryableStepError(
                f"could not connect to {host!r}", code="NETWORK_ERROR"
            ) from exc

    async def _resolve(self, host: str, port: int, request: httpx.Request) -> list[IPAddress]:
        # DNS runs outside httpx, so httpx's connect timeout would not bound it; apply it here.
        timeouts = request.extensions.get("timeout") or {}
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                return await resolve(host, port, self._resolver)
        except TimeoutError:
            raise RetryableStepError(
                f"could not resolve {host!r} in time", code="NETWORK_ERROR"
            ) from None

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._inner.aclose()


def _pin(request: httpx.Request, host: str, address: IPAddress) -> httpx.Request:
    # The original request keeps its URL (httpx builds redirects from it); only the copy sent
    # below carries the IP. ``Host`` was set from the original URL, and TLS needs the name for
    # SNI and certificate checks. Note: httpcore pools by IP, so two names on one IP may share a
    # TLS connection whose certificate was checked for the first name only.
    extensions = dict(request.extensions)
    if request.url.scheme == "https" and _literal(host) is None:
        extensions["sni_hostname"] = host
    return httpx.Request(
        request.method,
        request.url.copy_with(host=str(address)),
        headers=request.headers,
        stream=request.stream,
        extensions=extensions,
    )


def build_http_client(
    policy: EgressPolicy,
    *,
    resolver: Resolver | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    max_connections: int = 100,
) -> httpx.AsyncClient:
    """Build the client steps get as ``ctx.http``: guarded, redirect-limited, cookie-less.

    Args:
        policy: egress exceptions (``TREADLE_EGRESS_ALLOW``).
        resolver: DNS resolver; the system's by default.
        transport: what sends under the guard; a pooled ``AsyncHTTPTransport`` by default.
        max_connections: connection pool size of the default transport.
    """
    inner = transport or httpx.AsyncHTTPTransport(
        limits=httpx.Limits(max_connections=max_connections), trust_env=False
    )
    return httpx.AsyncClient(
        transport=GuardedTransport(inner, policy, resolver),
        follow_redirects=True,
        max_redirects=5,
        # Environment proxies and .netrc would bypass pinning or add credentials to user URLs.
        trust_env=False,
        # Shared by every tenant's steps, so it must never remember cookies: no domain may set any.
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(30.0),
        headers={"User-Agent": "Treadle"},
    )
