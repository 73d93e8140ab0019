"""Outbound network access for step types.

Invariants:
- Steps reach other hosts only through the client from ``build_http_client``; it refuses any
  destination whose address is not public unless ``TREADLE_EGRESS_ALLOW`` lists it.
- The check happens before connecting, on every resolved address and on every redirect hop,
  and the connection goes to an address that was checked (no second DNS lookup).
"""

from treadle.net.egress import (
    EgressDeniedError,
    EgressPolicy,
    GuardedTransport,
    Resolver,
    SystemResolver,
    build_http_client,
    check_address,
    classify_address,
    parse_ip_literal,
    resolve,
)

__all__ = [
    "EgressDeniedError",
    "EgressPolicy",
    "GuardedTransport",
    "Resolver",
    "SystemResolver",
    "build_http_client",
    "check_address",
    "classify_address",
    "parse_ip_literal",
    "resolve",
]
