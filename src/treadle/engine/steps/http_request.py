"""``HTTP_REQUEST``: call an HTTP API through the egress-guarded client.

The helpers below (URL, header and status handling, network error mapping) are shared with
``WEBHOOK`` so both step types follow the same retry rules. httpx is imported by the helpers
that need it, when a step first runs: a worker that never calls out does not load it.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import PermanentStepError, RetryableStepError, StepContext

if TYPE_CHECKING:
    import httpx

MAX_RESPONSE_BYTES: Final = 1024 * 1024
# Set by Treadle or by the HTTP layer; a template must not be able to override them.
_RESERVED_HEADERS: Final = frozenset(
    {"idempotency-key", "host", "content-length", "transfer-encoding", "connection"}
)
# Credentials a target may send back; step output is stored and shown to every tenant member.
_HIDDEN_RESPONSE_HEADERS: Final = frozenset(
    {"set-cookie", "set-cookie2", "authorization", "proxy-authorization", "cookie"}
)
_TOKEN_RE: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Config(BaseModel):
    """Configuration of an ``HTTP_REQUEST`` node; every field except the timeout is a template."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, JsonValue] = Field(default_factory=dict)
    body: JsonValue = None
    timeout_seconds: float = Field(default=30, gt=0, le=300)


class HttpRequest:
    """Sends one request and returns ``{"status", "headers", "body"}``.

    2xx succeeds; 408, 429, 5xx, timeouts and network errors are retryable; other statuses fail
    permanently. Bodies larger than ``max_response_bytes`` fail with ``RESPONSE_TOO_LARGE``.
    """

    name: ClassVar[str] = "HTTP_REQUEST"
    config_model: ClassVar[type[BaseModel]] = Config

    def __init__(self, max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        self.max_response_bytes = max_response_bytes

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON:
        """Render the config, send the request and shape the response."""
        if not isinstance(config, Config):
            raise TypeError(f"{self.name} expects its own Config, got {type(config).__name__}")
        url = parse_url(await ctx.render(config.url))
        headers = await build_headers(config.headers, ctx)
        if config.query:
            # Merged here: httpx's ``params=`` would replace a query already in the URL.
            url = url.copy_merge_params(_query_params(await ctx.render(dict(config.query))))
        body = None if config.body is None else await ctx.render(config.body)
        with network_errors(url.host):
            async with asyncio.timeout(config.timeout_seconds):
                async with ctx.http.stream(
                    config.method,
                    url,
                    headers=headers,
                    json=body,
                    timeout=config.timeout_seconds,
                ) as response:
                    check_status(response.status_code, config.method, url.host)
                    content = await read_capped(response, self.max_response_bytes)
        return {
            "status": response.status_code,
            "headers": public_headers(response.headers),
            "body": decode_body(content, response),
        }


def parse_url(value: JSON) -> httpx.URL:
    """The rendered ``url`` as an absolute http(s) URL.

    Raises:
        PermanentStepError: not a string or not an absolute http(s) URL (code ``INVALID_URL``).
    """
    import httpx

    if not isinstance(value, str):
        raise PermanentStepError("url must render to a string", code="INVALID_URL")
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise PermanentStepError(f"url is not valid: {exc}", code="INVALID_URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise PermanentStepError("url must be an absolute http or https URL", code="INVALID_URL")
    return url


async def build_headers(templates: Mapping[str, str], ctx: StepContext) -> dict[str, str]:
    """Render user headers, drop reserved ones and add ``Idempotency-Key``.

    Raises:
        PermanentStepError: a header name or value could not be sent (code ``INVALID_CONFIG``).
    """
    rendered = await ctx.render(dict(templates))
    headers: dict[str, str] = {}
    for name, value in rendered.items() if isinstance(rendered, dict) else ():
        text = as_text(value)
        if not _TOKEN_RE.fullmatch(name) or any(c in text for c in "\r\n\0"):
            raise PermanentStepError(f"header {name!r} is not valid", code="INVALID_CONFIG")
        if name.lower() not in _RESERVED_HEADERS:
            headers[name] = text
    headers["Idempotency-Key"] = ctx.idempotency_key
    return headers


def as_text(value: JSON) -> str:
    """A rendered value as header/query text: strings as is, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _query_params(rendered: JSON) -> httpx.QueryParams:
    import httpx

    params: list[tuple[str, str | int | float | bool | None]] = []
    for name, value in rendered.items() if isinstance(rendered, dict) else ():
        values = value if isinstance(value, list) else [value]
        params.extend((name, as_text(item)) for item in values)
    return httpx.QueryParams(params)


@contextmanager
def network_errors(host: str) -> Iterator[None]:
    """Translate httpx failures into step errors that say whether to retry."""
    import httpx

    try:
        yield
    except (httpx.TimeoutException, TimeoutError) as exc:
        raise RetryableStepError(f"request to {host!r} timed out", code="TIMEOUT") from exc
    except httpx.TooManyRedirects as exc:
        raise PermanentStepError(
            f"request to {host!r} was redirected too often", code="TOO_MANY_REDIRECTS"
        ) from exc
    except (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL) as exc:
        raise PermanentStepError(f"request to {host!r} is invalid", code="INVALID_URL") from exc
    except httpx.HTTPError as exc:
        raise RetryableStepError(f"request to {host!r} failed", code="NETWORK_ERROR") from exc


def check_status(status: int, method: str, host: str) -> None:
    """Accept 2xx; 408, 429 and 5xx are retryable; anything else fails for good.

    Raises:
        RetryableStepError | PermanentStepError: with code ``HTTP_<status>``.
    """
    if 200 <= status < 300:
        return
    message = f"{method} {host} returned HTTP {status}"
    if status in (408, 429) or status >= 500:
        raise RetryableStepError(message, code=f"HTTP_{status}")
    raise PermanentStepError(message, code=f"HTTP_{status}")


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """Read the (decoded) body, failing as soon as it exceeds ``limit`` bytes.

    Raises:
        PermanentStepError: the body is too large (code ``RESPONSE_TOO_LARGE``).
    """
    too_large = PermanentStepError(
        f"response body is larger than {limit} bytes", code="RESPONSE_TOO_LARGE"
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    content = bytearray()
    async for chunk in response.aiter_bytes():
        content += chunk
        if len(content) > limit:
            raise too_large
    return bytes(content)


def public_headers(headers: httpx.Headers) -> JSONObject:
    """Response headers with lower-case names, repeated ones joined, credentials removed."""
    result: dict[str, str] = {}
    for name, value in headers.multi_items():
        key = name.lower()
        if key not in _HIDDEN_RESPONSE_HEADERS:
            result[key] = f"{result[key]}, {value}" if key in result else value
    return dict(result)


def decode_body(content: bytes, response: httpx.Response) -> JSON:
    """Parsed JSON when the response says JSON and parses, else text."""
    text = content.decode(_charset(response), errors="replace")
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "application/json" or media_type.endswith("+json"):
        try:
            # NaN/Infinity are not JSON and the databases refuse them, so keep such bodies as text.
            parsed: JSON = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            return text
        return parsed
    return text


def _charset(response: httpx.Response) -> str:
    charset = response.charset_encoding or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        return "utf-8"
    return charset


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


STEP = HttpRequest()
