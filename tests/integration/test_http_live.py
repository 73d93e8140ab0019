"""HTTP_REQUEST and WEBHOOK against real uvicorn sinks on loopback (127.0.0.1/127.0.0.2 only)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.fakes import serve_app
from tests.fakes.sink import Sink
from treadle.ai.mock import MockModelClient
from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import PermanentStepError, RetryableStepError, StepContext
from treadle.engine.steps.http_request import STEP as HTTP_STEP
from treadle.engine.steps.http_request import Config as HttpConfig
from treadle.engine.steps.webhook import STEP as WEBHOOK_STEP
from treadle.engine.steps.webhook import Config as WebhookConfig
from treadle.net.egress import EgressDeniedError, EgressPolicy, build_http_client

ONLY_127_0_0_1 = EgressPolicy.from_setting("127.0.0.1")
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Verbatim:
    """Renders nothing: these tests use literal URLs (the real engine is tested elsewhere)."""

    def render(self, value: JSON, context: JSONObject) -> JSON:
        return value

    async def render_bounded(self, value: JSON, context: JSONObject, allowance: object) -> JSON:
        return value


class LoopbackResolver:
    """Maps ``sink.test`` to 127.0.0.1 so no DNS query is ever sent."""

    async def resolve(self, host: str, port: int) -> list[str]:
        if host != "sink.test":
            raise OSError(host)
        return ["127.0.0.1"]


@pytest.fixture
def sink() -> Iterator[tuple[Sink, str]]:
    app = Sink()
    with serve_app(app.app, "127.0.0.1") as base_url:
        yield app, base_url


@pytest.fixture
def other_sink() -> Iterator[tuple[Sink, str]]:
    app = Sink()
    with serve_app(app.app, "127.0.0.2") as base_url:
        yield app, base_url


def make_ctx(policy: EgressPolicy) -> StepContext:
    return StepContext(
        run_id="run9",
        workflow_id="wf9",
        node_id="live",
        attempt=1,
        now=NOW,
        http=build_http_client(policy, resolver=LoopbackResolver()),
        model=MockModelClient(),
        default_model="m",
        logger=logging.getLogger("test"),
        templates=Verbatim(),  # type: ignore[arg-type]
        template_context={"input": {"n": 1}, "steps": {}},
    )


async def run_http(config: dict[str, Any], policy: EgressPolicy = ONLY_127_0_0_1) -> JSON:
    ctx = make_ctx(policy)
    async with ctx.http:
        return await HTTP_STEP.run(HttpConfig.model_validate(config), ctx)


async def test_request_to_allowed_loopback_succeeds(sink: tuple[Sink, str]) -> None:
    app, base_url = sink
    output = await run_http({"url": f"{base_url}/items?x=1", "headers": {"X-A": "b"}})
    assert isinstance(output, dict)
    assert output["status"] == 200
    assert output["body"] == {"ok": True, "path": "/items"}
    assert isinstance(output["headers"], dict)
    assert "set-cookie" not in output["headers"]
    [seen] = app.requests
    assert (seen.method, seen.path, seen.query) == ("GET", "/items", "x=1")
    assert seen.headers["idempotency-key"] == "run9:live:1"
    assert seen.headers["x-a"] == "b"


async def test_allowed_host_name_is_pinned_and_keeps_its_host_header(
    sink: tuple[Sink, str],
) -> None:
    app, base_url = sink
    port = base_url.rsplit(":", 1)[1]
    output = await run_http(
        {"url": f"http://sink.test:{port}/named"}, EgressPolicy.from_setting("sink.test")
    )
    assert isinstance(output, dict)
    assert output["status"] == 200
    assert app.requests[0].headers["host"] == f"sink.test:{port}"


async def test_loopback_without_allowance_is_denied_before_connecting(
    sink: tuple[Sink, str],
) -> None:
    app, base_url = sink
    with pytest.raises(EgressDeniedError) as caught:
        await run_http({"url": f"{base_url}/items"}, EgressPolicy())
    assert caught.value.code == "EGRESS_DENIED"
    assert app.requests == []


async def test_redirect_to_a_disallowed_address_is_denied(
    sink: tuple[Sink, str], other_sink: tuple[Sink, str]
) -> None:
    app, base_url = sink
    other, other_url = other_sink
    with pytest.raises(EgressDeniedError):
        await run_http({"url": f"{base_url}/redirect?to={other_url}/landing"})
    assert [r.path for r in app.requests] == ["/redirect"]
    assert other.requests == []  # the second server never saw a connection's request


async def test_redirect_within_allowed_address_is_followed(sink: tuple[Sink, str]) -> None:
    app, base_url = sink
    output = await run_http({"url": f"{base_url}/redirect?to=/landing&status=307"})
    assert isinstance(output, dict)
    assert output["body"] == {"ok": True, "path": "/landing"}
    assert [r.path for r in app.requests] == ["/redirect", "/landing"]


async def test_status_mapping_and_size_cap_live(sink: tuple[Sink, str]) -> None:
    app, base_url = sink
    app.script("/flaky", 503, 404)
    with pytest.raises(RetryableStepError, match="503"):
        await run_http({"url": f"{base_url}/flaky"})
    with pytest.raises(PermanentStepError) as caught:
        await run_http({"url": f"{base_url}/flaky"})
    assert caught.value.code == "HTTP_404"
    with pytest.raises(PermanentStepError) as caught:
        await run_http({"url": f"{base_url}/big?bytes={2 * 1024 * 1024}"})
    assert caught.value.code == "RESPONSE_TOO_LARGE"


async def test_connection_refused_is_retryable() -> None:
    with serve_app(Sink().app) as base_url:
        pass  # the server is gone; its port now refuses connections
    with pytest.raises(RetryableStepError) as caught:
        await run_http({"url": f"{base_url}/"})
    assert caught.value.code == "NETWORK_ERROR"


async def test_signed_webhook_live(sink: tuple[Sink, str]) -> None:
    app, base_url = sink
    ctx = make_ctx(ONLY_127_0_0_1)
    config = WebhookConfig.model_validate({"url": f"{base_url}/hook", "secret": "s3cret"})
    async with ctx.http:
        assert await WEBHOOK_STEP.run(config, ctx) == {"status": 200}
    [seen] = app.requests
    assert seen.method == "POST"
    assert seen.headers["content-type"] == "application/json"
    match = re.fullmatch(r"t=(\d+),v1=([0-9a-f]+)", seen.headers["x-treadle-signature"])
    assert match is not None
    mac = hmac.new(b"s3cret", match.group(1).encode() + b"." + seen.body, hashlib.sha256)
    assert hmac.compare_digest(mac.hexdigest(), match.group(2))
    assert seen.body == b'{"runId":"run9","workflowId":"wf9","input":{"n":1},"steps":{}}'
