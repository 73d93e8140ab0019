"""HTTP_REQUEST and WEBHOOK over httpx.MockTransport under the egress guard (no packet leaves)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pydantic
import pytest

from treadle.ai.mock import MockModelClient
from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import PermanentStepError, RetryableStepError, StepContext
from treadle.engine.steps.http_request import STEP as HTTP_STEP
from treadle.engine.steps.http_request import Config as HttpConfig
from treadle.engine.steps.http_request import HttpRequest
from treadle.engine.steps.webhook import STEP as WEBHOOK_STEP
from treadle.engine.steps.webhook import Config as WebhookConfig
from treadle.engine.steps.webhook import sign
from treadle.net.egress import EgressDeniedError, EgressPolicy, build_http_client


class StandInTemplates:
    """Replaces ``{{ dotted.path }}``; a string that is one expression yields the raw value."""

    _EXPR = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")

    def render(self, value: JSON, context: JSONObject) -> JSON:
        if isinstance(value, dict):
            return {k: self.render(v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [self.render(v, context) for v in value]
        if not isinstance(value, str):
            return value
        whole = self._EXPR.fullmatch(value)
        if whole:
            return self._lookup(whole.group(1), context)
        return self._EXPR.sub(lambda m: str(self._lookup(m.group(1), context)), value)

    def _lookup(self, path: str, context: JSON) -> JSON:
        for part in path.split("."):
            assert isinstance(context, dict)
            context = context[part]
        return context


def make_templates() -> Any:
    try:
        from treadle.engine.template import TemplateEngine
    except ImportError:
        return StandInTemplates()
    return TemplateEngine()


TEMPLATES = make_templates()
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
CONTEXT: JSONObject = {
    "input": {"itemId": 42, "tenant": "acme", "q": "red shoes", "name": "Ada", "tricky": "{{ x }}"},
    "steps": {"fetch": {"output": {"status": 200}}, "shape": {"output": [1, 2]}},
    "run": {"id": "run1"},
    "workflow": {"id": "wf1"},
}
Handler = Callable[[httpx.Request], httpx.Response]


class FakeResolver:
    """Maps test host names to public documentation-free addresses; never touches DNS."""

    async def resolve(self, host: str, port: int) -> list[str]:
        table = {"api.example": ["93.184.216.34"], "hooks.example": ["93.184.216.35"]}
        if host not in table:
            raise OSError(host)
        return table[host]


class Recorder:
    """A MockTransport handler that records requests and answers with ``reply``."""

    def __init__(self, reply: Handler | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.reply = reply or (lambda _: httpx.Response(200, json={"ok": True}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.reply(request)


def make_ctx(handler: Handler) -> StepContext:
    http = build_http_client(
        EgressPolicy(), resolver=FakeResolver(), transport=httpx.MockTransport(handler)
    )
    return StepContext(
        run_id="run1",
        workflow_id="wf1",
        node_id="call",
        attempt=2,
        now=NOW,
        http=http,
        model=MockModelClient(),
        default_model="test-model",
        logger=logging.getLogger("test"),
        templates=TEMPLATES,
        template_context=CONTEXT,
    )


async def run_http(config: dict[str, Any], handler: Handler, step: HttpRequest = HTTP_STEP) -> JSON:
    ctx = make_ctx(handler)
    async with ctx.http:
        return await step.run(HttpConfig.model_validate(config), ctx)


async def run_webhook(config: dict[str, Any], handler: Handler) -> JSON:
    ctx = make_ctx(handler)
    async with ctx.http:
        return await WEBHOOK_STEP.run(WebhookConfig.model_validate(config), ctx)


# --- HTTP_REQUEST -----------------------------------------------------------------------------


async def test_get_returns_status_public_headers_and_parsed_json() -> None:
    def reply(_: httpx.Request) -> httpx.Response:
        headers = [("Set-Cookie", "sid=1"), ("X-Trace", "a"), ("X-Trace", "b")]
        return httpx.Response(200, json={"items": [1, 2]}, headers=headers)

    output = await run_http({"url": "https://api.example/items"}, Recorder(reply))
    assert isinstance(output, dict)
    assert output["status"] == 200
    assert output["body"] == {"items": [1, 2]}
    headers = output["headers"]
    assert isinstance(headers, dict)
    assert headers["content-type"] == "application/json"
    assert headers["x-trace"] == "a, b"
    assert "set-cookie" not in headers


async def test_templates_render_url_headers_query_and_body() -> None:
    recorder = Recorder()
    config = {
        "method": "POST",
        "url": "https://api.example/items/{{ input.itemId }}?fixed=1",
        "headers": {"X-Tenant": "{{ input.tenant }}"},
        "query": {"q": "{{ input.q }}", "tag": ["a", "b"], "n": 3},
        "body": {"name": "{{ input.name }}", "n": 3, "nested": ["{{ input.tenant }}"]},
        "timeoutSeconds": 5,
    }
    await run_http(config, recorder)
    [sent] = recorder.requests
    assert sent.method == "POST"
    assert sent.url.path == "/items/42"
    assert sent.url.params.multi_items() == [
        ("fixed", "1"),
        ("q", "red shoes"),
        ("tag", "a"),
        ("tag", "b"),
        ("n", "3"),
    ]
    assert sent.headers["x-tenant"] == "acme"
    assert sent.headers["content-type"] == "application/json"
    assert json.loads(sent.content) == {"name": "Ada", "n": 3, "nested": ["acme"]}


async def test_idempotency_key_is_sent_and_cannot_be_overridden() -> None:
    recorder = Recorder()
    headers = {"Idempotency-Key": "mine", "idempotency-key": "also-mine", "Host": "evil.example"}
    await run_http({"url": "https://api.example/", "headers": headers}, recorder)
    [sent] = recorder.requests
    assert sent.headers.get_list("idempotency-key") == ["run1:call:2"]
    assert sent.headers["host"] == "api.example"
    assert "content-type" not in sent.headers  # no body configured, none sent


@pytest.mark.parametrize("status", [200, 201, 204])
async def test_2xx_succeeds(status: int) -> None:
    output = await run_http(
        {"url": "https://api.example/"}, Recorder(lambda _: httpx.Response(status))
    )
    assert isinstance(output, dict)
    assert output["status"] == status


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_retryable_statuses(status: int) -> None:
    with pytest.raises(RetryableStepError) as caught:
        await run_http({"url": "https://api.example/"}, Recorder(lambda _: httpx.Response(status)))
    assert caught.value.code == f"HTTP_{status}"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422, 304])
async def test_permanent_statuses(status: int) -> None:
    with pytest.raises(PermanentStepError) as caught:
        await run_http({"url": "https://api.example/"}, Recorder(lambda _: httpx.Response(status)))
    assert caught.value.code == f"HTTP_{status}"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (httpx.ReadTimeout, "TIMEOUT"),
        (httpx.ReadError, "NETWORK_ERROR"),
        (httpx.ConnectError, "NETWORK_ERROR"),
    ],
)
async def test_network_failures_are_retryable(error: type[httpx.TransportError], code: str) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        raise error("boom", request=request)

    with pytest.raises(RetryableStepError) as caught:
        await run_http({"url": "https://api.example/"}, fail)
    assert caught.value.code == code


async def test_egress_denial_propagates_as_permanent() -> None:
    recorder = Recorder()
    with pytest.raises(EgressDeniedError):
        await run_http({"url": "http://10.0.0.1/admin"}, recorder)
    assert recorder.requests == []


@pytest.mark.parametrize("size", [100, 101])
async def test_response_size_cap(size: int) -> None:
    step = HttpRequest(max_response_bytes=100)
    reply = Recorder(lambda _: httpx.Response(200, content=b"x" * size))
    if size <= 100:
        output = await run_http({"url": "https://api.example/"}, reply, step)
        assert isinstance(output, dict)
        assert output["body"] == "x" * size
    else:
        with pytest.raises(PermanentStepError) as caught:
            await run_http({"url": "https://api.example/"}, reply, step)
        assert caught.value.code == "RESPONSE_TOO_LARGE"


async def test_default_cap_is_one_mebibyte_even_without_content_length() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(17):
            yield b"y" * 65536  # 17 x 64 KiB > 1 MiB, sent chunked

    with pytest.raises(PermanentStepError) as caught:
        await run_http(
            {"url": "https://api.example/"}, lambda _: httpx.Response(200, content=chunks())
        )
    assert caught.value.code == "RESPONSE_TOO_LARGE"


@pytest.mark.parametrize(
    ("content_type", "content", "expected"),
    [
        ("application/json", b'{"a": 1}', {"a": 1}),
        ("application/problem+json; charset=utf-8", b'{"title": "x"}', {"title": "x"}),
        ("application/json", b"{not json", "{not json"),
        ("application/json", b"[NaN]", "[NaN]"),
        ("text/plain; charset=latin-1", "caf\u00e9".encode("latin-1"), "caf\u00e9"),
        ("text/html", b'{"a": 1}', '{"a": 1}'),
    ],
)
async def test_body_decoding(content_type: str, content: bytes, expected: JSON) -> None:
    def reply(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=content, headers={"content-type": content_type})

    output = await run_http({"url": "https://api.example/"}, reply)
    assert isinstance(output, dict)
    assert output["body"] == expected


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"url": "ftp://api.example/x"}, "INVALID_URL"),
        ({"url": "/relative"}, "INVALID_URL"),
        ({"url": "{{ input.itemId }}"}, "INVALID_URL"),
        (
            {"url": "https://api.example/", "headers": {"X-Bad": "a\r\nInjected: 1"}},
            "INVALID_CONFIG",
        ),
        ({"url": "https://api.example/", "headers": {"Bad Name": "x"}}, "INVALID_CONFIG"),
    ],
)
async def test_invalid_rendered_config_fails_permanently(config: dict[str, Any], code: str) -> None:
    recorder = Recorder()
    with pytest.raises(PermanentStepError) as caught:
        await run_http(config, recorder)
    assert caught.value.code == code
    assert recorder.requests == []


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"url": "https://x", "timeoutSeconds": 301},
        {"url": "https://x", "method": "TRACE"},
        {"url": "https://x", "unknown": 1},
        {"url": "https://x", "timeout_seconds": 3},
    ],
)
def test_config_validation(config: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        HttpConfig.model_validate(config)


# --- WEBHOOK ----------------------------------------------------------------------------------


def test_sign_matches_an_independent_hmac() -> None:
    body = b'{"a":1}'
    expected = hmac.new(b"k3y", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k3y", body, 1_700_000_000) == f"t=1700000000,v1={expected}"


async def test_signed_default_body() -> None:
    recorder = Recorder(lambda _: httpx.Response(202))
    output = await run_webhook({"url": "https://hooks.example/x", "secret": "s3cret"}, recorder)
    assert output == {"status": 202}
    [sent] = recorder.requests
    assert sent.method == "POST"
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["idempotency-key"] == "run1:call:2"
    expected_body = {
        "runId": "run1",
        "workflowId": "wf1",
        "input": CONTEXT["input"],
        "steps": {"fetch": {"output": {"status": 200}}, "shape": {"output": [1, 2]}},
    }
    assert json.loads(sent.content) == expected_body
    compact = json.dumps(expected_body, separators=(",", ":"), ensure_ascii=False).encode()
    assert sent.content == compact
    assert b"{{ x }}" in sent.content  # run data is never rendered as a template
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", sent.headers["x-treadle-signature"])
    assert match is not None
    timestamp = match.group(1)
    assert int(timestamp) == int(NOW.timestamp())
    mac = hmac.new(b"s3cret", timestamp.encode() + b"." + sent.content, hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), match.group(2))


async def test_custom_templated_body_and_no_signature_without_secret() -> None:
    recorder = Recorder()
    config = {
        "url": "https://hooks.example/x",
        "headers": {"X-Tenant": "{{ input.tenant }}", "Content-Type": "text/plain"},
        "body": {"who": "{{ input.name }}", "status": "{{ steps.fetch.output.status }}"},
    }
    assert await run_webhook(config, recorder) == {"status": 200}
    [sent] = recorder.requests
    assert json.loads(sent.content) == {"who": "Ada", "status": 200}
    assert sent.headers.get_list("content-type") == ["application/json"]
    assert sent.headers["x-tenant"] == "acme"
    assert "x-treadle-signature" not in sent.headers


@pytest.mark.parametrize(
    ("status", "error"),
    [(500, RetryableStepError), (429, RetryableStepError), (400, PermanentStepError)],
)
async def test_webhook_failures_never_show_the_secret(status: int, error: type[Exception]) -> None:
    secret = "top-secret-value"
    config = WebhookConfig.model_validate({"url": "https://hooks.example/x", "secret": secret})
    assert secret not in repr(config)
    assert secret not in str(config.model_dump())
    with pytest.raises(error) as caught:
        await run_webhook(
            {"url": "https://hooks.example/x", "secret": secret},
            Recorder(lambda _: httpx.Response(status)),
        )
    assert secret not in str(caught.value)
    assert secret not in repr(caught.value)
    output = await run_webhook({"url": "https://hooks.example/x", "secret": secret}, Recorder())
    assert secret not in json.dumps(output)


async def test_webhook_egress_is_guarded() -> None:
    recorder = Recorder()
    with pytest.raises(EgressDeniedError):
        await run_webhook({"url": "http://127.0.0.1:9/hook", "secret": "s"}, recorder)
    assert recorder.requests == []
