"""Address classification and the egress allow-list: pure decisions, no I/O.

``classify_address`` says why an address is not a public destination; ``parse_ip_literal`` reads
every numeric spelling a resolver would accept; ``EgressPolicy`` is ``TREADLE_EGRESS_ALLOW``.
``treadle.net.egress`` applies them to requests.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Final, TypeAlias

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# A policy entry that is not an IP/CIDR must look like a DNS name (underscores allowed: Docker).
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
_IP_LIKE_RE: Final = re.compile(r"[0-9.]+(/\d+)?|.*[:/].*")


def _table(rows: dict[str, str]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple(
        (ipaddress.ip_network(net), reason) for reason, nets in rows.items() for net in nets.split()
    )


# First match wins, so specific entries (metadata) come before the blocks that contain them.
_V4_DENIED: Final = _table(
    {
        "cloud metadata": "169.254.169.254/32",
        "unspecified": "0.0.0.0/8",
        "loopback": "127.0.0.0/8",
        "private": "10.0.0.0/8 172.16.0.0/12 192.168.0.0/16",
        "shared (carrier-grade NAT)": "100.64.0.0/10",
        "link-local": "169.254.0.0/16",
        "multicast": "224.0.0.0/4",
        # IETF assignments, documentation, benchmarking, class E and broadcast.
        "reserved": "192.0.0.0/24 192.0.2.0/24 198.18.0.0/15 198.51.100.0/24 203.0.113.0/24 "
        "240.0.0.0/4",
    }
)
_V6_DENIED: Final = _table(
    {
        "loopback": "::1/128",
        "unspecified": "::/128",
        "cloud metadata": "fd00:ec2::254/128",
        "private": "fc00::/7",
        "link-local": "fe80::/10",
        "site-local": "fec0::/10",
        "multicast": "ff00::/8",
        # IETF assignments (Teredo 2001::/32, ORCHID, benchmarking) and documentation.
        "reserved": "2001::/23 2001:db8::/32 3fff::/20",
    }
)
# IPv6 forms that carry an IPv4 destination in their low 32 bits (mapped, compatible, NAT64).
_V4_IN_LOW_BITS: Final = tuple(
    ipaddress.IPv6Network(n) for n in ("::ffff:0:0/96", "::/96", "64:ff9b::/96")
)
_GLOBAL_UNICAST: Final = ipaddress.IPv6Network("2000::/3")
# Numeric hosts that inet_aton reads (127.1, 0x7f000001, 0177.0.0.1, 2130706433).
_NUMERIC_V4_RE: Final = re.compile(r"(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}", re.I)


def classify_address(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public destination (e.g. ``"loopback"``), or None when it is public."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _lookup(ip, _V4_DENIED)
    if int(ip) <= 1:  # :: and ::1 before the IPv4-compatible range ::/96 that holds them
        return _lookup(ip, _V6_DENIED)
    embedded = _embedded_v4(ip)
    if embedded is not None:
        return classify_address(embedded)
    reason = _lookup(ip, _V6_DENIED)
    if reason is None and ip not in _GLOBAL_UNICAST:
        return "reserved"
    return reason


def _lookup(ip: IPAddress, table: tuple[tuple[IPNetwork, str], ...]) -> str | None:
    return next((reason for net, reason in table if ip in net), None)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if any(ip in net for net in _V4_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.sixtofour  # 2002::/16 carries its IPv4 in bits 16-48


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, in any form a resolver would accept, or None for a name.

    Raises:
        ValueError: ``host`` is numeric but no valid address (e.g. ``08.0.0.1``).
    """
    host = normalize_host(host)
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not _NUMERIC_V4_RE.fullmatch(host):
        return None
    try:
        # Decimal, octal and hex parts as C's inet_aton reads them, so "0177.1" is loopback.
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        raise ValueError(f"{host!r} is not a valid IPv4 address") from None


def normalize_host(host: str) -> str:
    """Lower-case ``host``, drop IPv6 brackets and one trailing dot, so spellings compare equal."""
    host = host.strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host[:-1] if host.endswith(".") else host


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """Destinations that may be reached although their address is not public.

    Attributes:
        hosts: normalized host names allowed whatever they resolve to.
        networks: IP networks whose addresses are allowed.
    """

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_setting(cls, value: str) -> EgressPolicy:
        """Parse ``TREADLE_EGRESS_ALLOW``: comma-separated host names, IPs and CIDRs.

        Raises:
            ValueError: an entry is neither a valid IP/CIDR nor a valid host name.
        """
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in value.split(","):
            entry = normalize_host(raw)
            if not entry:
                continue
            parsed = _parse_entry(entry)
            if isinstance(parsed, str):
                hosts.add(parsed)
            else:
                networks.append(parsed)
        return cls(hosts=frozenset(hosts), networks=tuple(networks))

    def allows(self, host: str, ip: IPAddress) -> bool:
        """Whether ``host`` is listed or ``ip`` (or the IPv4 it maps) is in a listed network."""
        if normalize_host(host) in self.hosts:
            return True
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(
            c in net for c in candidates for net in self.networks if c.version == net.version
        )


def _parse_entry(entry: str) -> IPNetwork | str:
    try:
        return ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        if _IP_LIKE_RE.fullmatch(entry):
            raise ValueError(
                f"TREADLE_EGRESS_ALLOW entry {entry!r} is not a valid IP address or CIDR "
                f"(ports are not supported): {exc}"
            ) from None
    try:
        name = entry.encode("idna").decode("ascii")
    except UnicodeError:
        name = ""
    if not _HOSTNAME_RE.fullmatch(name):
        raise ValueError(f"TREADLE_EGRESS_ALLOW entry {entry!r} is not a host name, IP or CIDR")
    return name
