"""Outbound network access for step types.

Invariants:
- Steps reach other hosts only through the client from ``treadle.net.egress.build_http_client``;
  it refuses any destination whose address is not public unless ``TREADLE_EGRESS_ALLOW`` lists
  it.
- The check happens before connecting, on every resolved address and on every redirect hop,
  and the connection goes to an address that was checked (no second DNS lookup).
- Importing ``treadle.net`` or ``treadle.net.lazy`` does not import httpx: ``open_resources``
  gives steps a ``LazyHttpClient`` that loads ``treadle.net.egress`` on the first request.
"""
