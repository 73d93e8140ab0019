"""Egress guard: address decisions (never connecting) and the guarded transport over a mock."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadle.engine.steps import PermanentStepError, RetryableStepError
from treadle.net.egress import (
    EgressDeniedError,
    EgressPolicy,
    build_http_client,
    check_address,
    classify_address,
    parse_ip_literal,
    resolve,
)

NO_EXCEPTIONS = EgressPolicy()

DENIED = [
    ("127.0.0.1", "loopback"),
    ("127.0.0.2", "loopback"),
    ("127.255.255.254", "loopback"),
    ("::1", "loopback"),
    ("0.0.0.0", "unspecified"),  # noqa: S104 (data, never bound)
    ("0.1.2.3", "unspecified"),
    ("::", "unspecified"),
    ("169.254.169.254", "metadata"),
    ("169.254.1.1", "link-local"),
    ("fd00:ec2::254", "metadata"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared"),
    ("100.127.255.254", "shared"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::127.0.0.1", "loopback"),
    ("64:ff9b::a00:1", "private"),
    ("64:ff9b::7f00:1", "loopback"),
    ("2002:0a00:0001::", "private"),
    ("2002:7f00:0001::1", "loopback"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "reserved"),  # Teredo, client 10.0.0.1
    ("2001:db8::1", "reserved"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "reserved"),
    ("198.18.0.1", "reserved"),
    ("100::1", "reserved"),
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "100.63.255.255",
    "100.128.0.0",
    "172.32.0.1",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:0808:0808::1",
]


@pytest.mark.parametrize(("address", "reason"), DENIED)
def test_non_public_addresses_are_denied(address: str, reason: str) -> None:
    ip = ipaddress.ip_address(address)
    with pytest.raises(EgressDeniedError) as caught:
        check_address("target.example", ip, NO_EXCEPTIONS)
    assert caught.value.code == "EGRESS_DENIED"
    assert isinstance(caught.value, PermanentStepError)
    assert "target.example" in caught.value.message
    assert reason in caught.value.message
    # Generic about internals: the resolved address is not revealed.
    assert address not in caught.value.message


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert classify_address(ip) is None
    check_address("public.example", ip, NO_EXCEPTIONS)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2130706433", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7F.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("017700000001", "127.0.0.1"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("012.0.0.1", "10.0.0.1"),
        ("[::1]", "::1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("8.8.8.8", "8.8.8.8"),
    ],
)
async def test_numeric_hosts_are_normalised_not_resolved(host: str, expected: str) -> None:
    assert parse_ip_literal(host) == ipaddress.ip_address(expected)
    resolver = FakeResolver({})  # any lookup would fail the test
    assert await resolve(host, 80, resolver) == [ipaddress.ip_address(expected)]
    assert resolver.calls == []


async def test_malformed_numeric_host_is_denied() -> None:
    with pytest.raises(EgressDeniedError):
        await resolve("08.0.0.1", 80, FakeResolver({}))


async def test_names_are_resolved_and_dns_failures_are_retryable() -> None:
    resolver = FakeResolver({"api.example": ["93.184.216.34", "2606:4700::1111"]})
    addresses = await resolve("api.example", 443, resolver)
    assert [str(a) for a in addresses] == ["93.184.216.34", "2606:4700::1111"]
    with pytest.raises(RetryableStepError) as caught:
        await resolve("missing.example", 443, resolver)
    assert caught.value.code == "NETWORK_ERROR"


def test_allow_list_by_host_and_by_cidr() -> None:
    policy = EgressPolicy.from_setting(" 127.0.0.1, Hooks.Internal. ,10.0.0.0/8,, fd00::/8")
    assert policy.hosts == frozenset({"hooks.internal"})
    check_address("127.0.0.1", ipaddress.ip_address("127.0.0.1"), policy)
    check_address("x", ipaddress.ip_address("::ffff:127.0.0.1"), policy)
    check_address("hooks.internal", ipaddress.ip_address("192.168.0.9"), policy)
    check_address("HOOKS.internal.", ipaddress.ip_address("192.168.0.9"), policy)
    check_address("db.corp", ipaddress.ip_address("10.1.2.3"), policy)
    check_address("ula.corp", ipaddress.ip_address("fd00::5"), policy)
    for host, address in [("127.0.0.2", "127.0.0.2"), ("other.internal", "192.168.0.9")]:
        with pytest.raises(EgressDeniedError):
            check_address(host, ipaddress.ip_address(address), policy)


@pytest.mark.parametrize(
    "setting", ["10.0.0.1/8", "localhost:8080", "bad host", "1.2.3.4.5", "::1/200", "-x-", "a..b"]
)
def test_invalid_allow_entries_are_rejected(setting: str) -> None:
    with pytest.raises(ValueError, match="TREADLE_EGRESS_ALLOW"):
        EgressPolicy.from_setting(setting)


def test_empty_setting_allows_nothing() -> None:
    assert EgressPolicy.from_setting("") == EgressPolicy()


# --- the guarded client over httpx.MockTransport: nothing leaves the process ----------------


class FakeResolver:
    """Answers from a table; a list of lists is consumed one answer per lookup."""

    def __init__(self, table: dict[str, list[str] | list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise OSError(f"no such host {host}")
        answer = self.table[host]
        if answer and isinstance(answer[0], list):
            return answer.pop(0) if len(answer) > 1 else answer[0]  # type: ignore[return-value]
        return answer  # type: ignore[return-value]


def recording_transport(
    handler: Callable[[httpx.Request], httpx.Response] | None = None,
) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request) if handler else httpx.Response(200, text="ok")

    return httpx.MockTransport(handle), seen


async def test_request_is_pinned_to_the_checked_address() -> None:
    transport, seen = recording_transport()
    resolver = FakeResolver({"api.example": ["93.184.216.34"]})
    async with build_http_client(NO_EXCEPTIONS, resolver=resolver, transport=transport) as client:
        response = await client.get("https://api.example:8443/items?x=1")
    assert response.status_code == 200
    assert response.request.url.host == "api.example"  # the caller sees its own URL
    [sent] = seen
    assert sent.url.host == "93.184.216.34"
    assert sent.url.port == 8443
    assert sent.url.query == b"x=1"
    assert sent.headers["host"] == "api.example:8443"
    assert sent.extensions["sni_hostname"] == "api.example"


async def test_name_resolving_to_loopback_is_denied_before_sending() -> None:
    transport, seen = recording_transport()
    resolver = FakeResolver({"localhost": ["127.0.0.1", "::1"]})
    async with build_http_client(NO_EXCEPTIONS, resolver=resolver, transport=transport) as client:
        with pytest.raises(EgressDeniedError, match="localhost"):
            await client.get("http://localhost/")
    assert seen == []


async def test_one_private_answer_among_public_ones_denies() -> None:
    transport, seen = recording_transport()
    resolver = FakeResolver({"mixed.example": ["93.184.216.34", "10.0.0.7"]})
    async with build_http_client(NO_EXCEPTIONS, resolver=resolver, transport=transport) as client:
        with pytest.raises(EgressDeniedError, match="private"):
            await client.get("http://mixed.example/")
    assert seen == []


async def test_dns_rebinding_is_caught_on_the_next_request() -> None:
    transport, seen = recording_transport()
    resolver = FakeResolver({"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    async with build_http_client(NO_EXCEPTIONS, resolver=resolver, transport=transport) as client:
        assert (await client.get("http://rebind.example/")).status_code == 200
        with pytest.raises(EgressDeniedError, match="loopback"):
            await client.get("http://rebind.example/")
    assert len(seen) == 1
    assert resolver.calls == ["rebind.example", "rebind.example"]


async def test_every_redirect_hop_is_checked() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/"})

    transport, seen = recording_transport(redirect)
    resolver = FakeResolver({"api.example": ["93.184.216.34"]})
    async with build_http_client(NO_EXCEPTIONS, resolver=resolver, transport=transport) as client:
        with pytest.raises(EgressDeniedError, match="metadata"):
            await client.get("http://api.example/start")
    assert [str(r.url) for r in seen] == ["http://93.184.216.34/start"]


@pytest.mark.parametrize("url", ["ftp://api.example/x", "file:///etc/passwd"])
async def test_other_schemes_are_denied(url: str) -> None:
    transport, seen = recording_transport()
    async with build_http_client(NO_EXCEPTIONS, transport=transport) as client:
        with pytest.raises((EgressDeniedError, httpx.UnsupportedProtocol)):
            await client.get(url)
    assert seen == []


async def test_allowed_private_host_is_reached() -> None:
    transport, seen = recording_transport()
    policy = EgressPolicy.from_setting("hooks.internal")
    resolver = FakeResolver({"hooks.internal": ["10.1.1.1"]})
    async with build_http_client(policy, resolver=resolver, transport=transport) as client:
        assert (await client.get("http://hooks.internal/")).status_code == 200
    assert seen[0].url.host == "10.1.1.1"


async def test_dns_and_connect_failures_are_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    transport, _ = recording_transport(refuse)
    resolver = FakeResolver({"down.example": ["93.184.216.34"]})
    async with build_http_client(NO_EXCEPTIONS, resolver=resolver, transport=transport) as client:
        for url in ["http://down.example/", "http://unknown.example/"]:
            with pytest.raises(RetryableStepError) as caught:
                await client.get(url)
            assert caught.value.code == "NETWORK_ERROR"


async def test_cookies_are_never_kept_between_requests() -> None:
    def set_cookie(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"set-cookie": "sid=tenant-a; Path=/"})

    transport, seen = recording_transport(set_cookie)
    resolver = FakeResolver({"api.example": ["93.184.216.34"]})
    async with build_http_client(NO_EXCEPTIONS, resolver=resolver, transport=transport) as client:
        await client.get("http://api.example/")
        await client.get("http://api.example/")
    assert "cookie" not in seen[1].headers


# --- property: agreement with an independent classification ---------------------------------

# (first address, prefix length), written as integers straight from the IANA registries.
V4_BLOCKS = [
    (0x00000000, 8),
    (0x0A000000, 8),
    (0x64400000, 10),
    (0x7F000000, 8),
    (0xA9FE0000, 16),
    (0xAC100000, 12),
    (0xC0000000, 24),
    (0xC0000200, 24),
    (0xC0A80000, 16),
    (0xC6120000, 15),
    (0xC6336400, 24),
    (0xCB007100, 24),
    (0xE0000000, 4),
    (0xF0000000, 4),
]


def in_block(value: int, base: int, length: int, bits: int) -> bool:
    return value >> (bits - length) == base >> (bits - length)


def v4_public(value: int) -> bool:
    return not any(in_block(value, base, length, 32) for base, length in V4_BLOCKS)


def v6_public(value: int) -> bool:
    if value in (0, 1):
        return False
    if value >> 32 in (0, 0xFFFF, 0x0064FF9B << 64):  # compatible, mapped, NAT64
        return v4_public(value & 0xFFFFFFFF)
    if value >> 112 == 0x2002:  # 6to4
        return v4_public((value >> 80) & 0xFFFFFFFF)
    if value >> 125 != 0b001:  # outside global unicast 2000::/3
        return False
    reserved = [(0x2001 << 112, 23), (0x20010DB8 << 96, 32), (0x3FFF << 112, 20)]
    return not any(in_block(value, base, length, 128) for base, length in reserved)


INTERESTING_V4 = st.sampled_from(
    [0x7F000001, 0x0A000001, 0xA9FEA9FE, 0xC0A80101, 0x64400001, 0x08080808, 0x01010101]
)
V4_INTS = st.one_of(st.integers(0, 2**32 - 1), INTERESTING_V4)


def with_prefix(base: int, length: int) -> st.SearchStrategy[int]:
    low = (1 << (128 - length)) - 1
    return st.integers(0, low).map(lambda rest: (base & ~low) | rest)


V6_INTS = st.one_of(
    st.integers(0, 2**128 - 1),
    st.builds(lambda prefix, v4: prefix | v4, st.sampled_from([0, 0xFFFF << 32]), V4_INTS),
    V4_INTS.map(lambda v4: (0x0064FF9B << 96) | v4),
    st.builds(
        lambda v4, rest: (0x2002 << 112) | (v4 << 80) | rest, V4_INTS, st.integers(0, 2**80 - 1)
    ),
    *(
        with_prefix(base, length)
        for base, length in [
            (0x2000 << 112, 3),
            (0x2001 << 112, 23),
            (0x2001 << 112, 32),
            (0xFC00 << 112, 7),
            (0xFE80 << 112, 10),
            (0xFF00 << 112, 8),
        ]
    ),
)


def assert_decision(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, public: bool) -> None:
    assert (classify_address(ip) is None) == public
    if public:
        check_address("h.example", ip, NO_EXCEPTIONS)
    else:
        with pytest.raises(EgressDeniedError):
            check_address("h.example", ip, NO_EXCEPTIONS)


@given(V4_INTS)
def test_ipv4_agrees_with_independent_classification(value: int) -> None:
    ip = ipaddress.IPv4Address(value)
    assert_decision(ip, v4_public(value))
    # Whatever the standard library calls non-public must be denied too.
    flags = (ip.is_private, ip.is_loopback, ip.is_link_local, ip.is_multicast, ip.is_reserved)
    if any(flags) or ip.is_unspecified:
        assert classify_address(ip) is not None


@given(V6_INTS)
def test_ipv6_agrees_with_independent_classification(value: int) -> None:
    ip = ipaddress.IPv6Address(value)
    assert_decision(ip, v6_public(value))
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_site_local:
        assert classify_address(ip) is not None
