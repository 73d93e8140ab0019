"""OpenAIModelClient against the fake Chat Completions server, served by uvicorn on loopback."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.fakes import serve_app
from tests.fakes.openai_server import FakeOpenAI
from treadle.ai.openai_client import OpenAIModelClient
from treadle.engine.ai import CompletionRequest
from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import PermanentStepError, RetryableStepError, StepContext, StepError
from treadle.engine.steps.ai_completion import STEP, Config

API_KEY = "sk-test-very-secret-0123456789"


@pytest.fixture
def fake() -> Iterator[tuple[FakeOpenAI, str]]:
    server = FakeOpenAI()
    with serve_app(server.app) as base_url:
        yield server, f"{base_url}/v1"


@pytest.fixture
async def client(fake: tuple[FakeOpenAI, str]) -> AsyncIterator[OpenAIModelClient]:
    model_client = OpenAIModelClient(API_KEY, fake[1])
    yield model_client
    await model_client.aclose()


def assert_no_key(error: StepError) -> None:
    for text in (error.message, str(error), repr(error)):
        assert API_KEY not in text
        assert "sk-test" not in text
    assert error.__cause__ is None  # the SDK's message (which may echo the key) is not chained
    assert error.__suppress_context__


async def test_plain_completion(fake: tuple[FakeOpenAI, str], client: OpenAIModelClient) -> None:
    server, _ = fake
    request = CompletionRequest(
        model="gpt-test", prompt="hello world", system="be brief", temperature=0.5, max_tokens=20
    )
    completion = await client.complete(request)
    assert completion.text == "Echo: hello world"
    assert (completion.model, completion.finish_reason, completion.mock) == (
        "gpt-test",
        "stop",
        False,
    )
    assert (completion.prompt_tokens, completion.completion_tokens) == (4, 3)
    [seen] = server.requests
    assert seen["headers"]["authorization"] == f"Bearer {API_KEY}"
    body = seen["body"]
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello world"},
    ]
    assert body["temperature"] == 0.5
    assert body["max_tokens"] == 20  # a custom base URL gets the widely supported name
    assert "max_completion_tokens" not in body
    assert "response_format" not in body
    assert "stream" not in body


async def test_json_completion(fake: tuple[FakeOpenAI, str], client: OpenAIModelClient) -> None:
    server, _ = fake
    request = CompletionRequest(model="gpt-test", prompt="give json", response_format="json")
    completion = await client.complete(request)
    assert json.loads(completion.text) == {"echo": "give json"}
    assert server.requests[0]["body"]["response_format"] == {"type": "json_object"}


async def test_streaming_reports_deltas_and_usage(
    fake: tuple[FakeOpenAI, str], client: OpenAIModelClient
) -> None:
    server, _ = fake
    deltas: list[str] = []

    async def on_delta(delta: str) -> None:
        deltas.append(delta)

    request = CompletionRequest(model="gpt-test", prompt="stream these four words")
    completion = await client.complete(request, on_delta=on_delta)
    assert deltas == ["Echo: ", "stream ", "these ", "four ", "words"]
    assert completion.text == "Echo: stream these four words"
    assert completion.finish_reason == "stop"
    assert (completion.prompt_tokens, completion.completion_tokens) == (4, 5)
    body = server.requests[0]["body"]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (429, RetryableStepError, "AI_RATE_LIMITED"),
        (500, RetryableStepError, "AI_UNAVAILABLE"),
        (400, PermanentStepError, "AI_REJECTED"),
        (401, PermanentStepError, "AI_REJECTED"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_errors_are_mapped_without_leaking_the_key(
    fake: tuple[FakeOpenAI, str],
    client: OpenAIModelClient,
    status: int,
    error: type[StepError],
    code: str,
    stream: bool,
) -> None:
    server, _ = fake
    server.fail_next(status)

    async def on_delta(delta: str) -> None:
        raise AssertionError("no delta expected")

    request = CompletionRequest(model="gpt-test", prompt="hi")
    with pytest.raises(error) as caught:
        await client.complete(request, on_delta=on_delta if stream else None)
    assert caught.value.code == code
    assert str(status) in caught.value.message
    assert_no_key(caught.value)
    assert len(server.requests) == 1  # no SDK retries: the engine owns retrying


async def test_timeout_and_unreachable_are_retryable(fake: tuple[FakeOpenAI, str]) -> None:
    server, base_url = fake
    server.delay_seconds = 1.0
    client = OpenAIModelClient(API_KEY, base_url)
    request = CompletionRequest(model="gpt-test", prompt="hi", timeout_seconds=0.2)
    with pytest.raises(RetryableStepError) as caught:
        await client.complete(request)
    assert caught.value.code == "AI_UNAVAILABLE"
    await client.aclose()

    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    closed = OpenAIModelClient(API_KEY, f"http://127.0.0.1:{port}/v1")
    with pytest.raises(RetryableStepError) as caught:
        await closed.complete(CompletionRequest(model="gpt-test", prompt="hi"))
    assert caught.value.code == "AI_UNAVAILABLE"
    assert_no_key(caught.value)
    await closed.aclose()


async def test_accepts_an_httpx_client(fake: tuple[FakeOpenAI, str]) -> None:
    _, base_url = fake
    async with httpx.AsyncClient(trust_env=False) as http:
        client = OpenAIModelClient(API_KEY, base_url, http_client=http)
        completion = await client.complete(CompletionRequest(model="gpt-test", prompt="via httpx"))
        await client.aclose()  # the caller's client stays open
        assert not http.is_closed
    assert completion.text == "Echo: via httpx"


class Verbatim:
    def render(self, value: JSON, context: JSONObject) -> JSON:
        return value

    async def render_bounded(self, value: JSON, context: JSONObject, allowance: object) -> JSON:
        return value


async def test_ai_step_streams_end_to_end(
    fake: tuple[FakeOpenAI, str], client: OpenAIModelClient
) -> None:
    deltas: list[str] = []

    async def emit(delta: str) -> None:
        deltas.append(delta)

    ctx = StepContext(
        run_id="r",
        workflow_id="w",
        node_id="ai",
        attempt=1,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        http=httpx.AsyncClient(trust_env=False),
        model=client,
        default_model="gpt-default",
        logger=logging.getLogger("test"),
        templates=Verbatim(),  # type: ignore[arg-type]
        emit_delta=emit,
    )
    config = Config.model_validate({"prompt": "say hi", "stream": True, "responseFormat": "text"})
    async with ctx.http:
        output = await STEP.run(config, ctx)
    assert output == {
        "text": "Echo: say hi",
        "model": "gpt-default",
        "finishReason": "stop",
        "usage": {"promptTokens": 2, "completionTokens": 3, "totalTokens": 5},
        "mock": False,
    }
    assert "".join(deltas) == "Echo: say hi"
