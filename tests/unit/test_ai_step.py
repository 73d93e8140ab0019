"""AI_COMPLETION with the offline MockModelClient (and a recording fake model)."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import httpx
import pydantic
import pytest

from treadle.ai import MockModelClient, build_model_client
from treadle.engine.ai import Completion, CompletionRequest, ModelClient, OnDelta
from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import PermanentStepError, StepContext
from treadle.engine.steps.ai_completion import STEP, Config


class StandInTemplates:
    """Replaces ``{{ dotted.path }}``; a string that is one expression yields the raw value."""

    _EXPR = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")

    def render(self, value: JSON, context: JSONObject) -> JSON:
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
CONTEXT: JSONObject = {
    "input": {"topic": "rivers", "doc": {"title": "Nile"}},
    "steps": {"fetch": {"output": {"body": {"text": "The Nile is long and old"}}}},
    "run": {"id": "run1"},
    "workflow": {"id": "wf1"},
}


class RecordingModel:
    """Returns a fixed text and remembers each request."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.requests: list[CompletionRequest] = []

    async def complete(
        self, request: CompletionRequest, *, on_delta: OnDelta | None = None
    ) -> Completion:
        self.requests.append(request)
        return Completion(self.text, "served-model", "stop", 3, 4, mock=False)


def make_ctx(model: ModelClient, deltas: list[str] | None = None) -> StepContext:
    async def emit(delta: str) -> None:
        if deltas is not None:
            deltas.append(delta)

    return StepContext(
        run_id="run1",
        workflow_id="wf1",
        node_id="summarize",
        attempt=1,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        http=httpx.AsyncClient(),  # never used: AI steps talk to the model client only
        model=model,
        default_model="default-model",
        logger=logging.getLogger("test"),
        templates=TEMPLATES,
        template_context=CONTEXT,
        emit_delta=emit,
    )


async def run(config: dict[str, Any], model: ModelClient, deltas: list[str] | None = None) -> JSON:
    ctx = make_ctx(model, deltas)
    async with ctx.http:
        return await STEP.run(Config.model_validate(config), ctx)


async def test_text_completion_output() -> None:
    prompt = "Summarize: {{ steps.fetch.output.body.text }}"
    output = await run({"prompt": prompt}, MockModelClient())
    assert output == {
        "text": "Mock completion: Summarize: The Nile is long and old",
        "model": "default-model",
        "finishReason": "stop",
        "usage": {"promptTokens": 7, "completionTokens": 9, "totalTokens": 16},
        "mock": True,
    }


async def test_json_completion_has_parsed_json() -> None:
    output = await run(
        {"prompt": "Facts about {{ input.topic }}", "responseFormat": "json", "model": "m2"},
        MockModelClient(),
    )
    assert isinstance(output, dict)
    assert output["json"] == {"mock": True, "prompt": "Facts about rivers"}
    assert json.loads(str(output["text"])) == output["json"]
    assert output["model"] == "m2"


async def test_streaming_emits_deltas_that_add_up_to_the_text() -> None:
    deltas: list[str] = []
    prompt = "Tell me about {{ input.topic }} and their deltas at length please"
    output = await run({"prompt": prompt, "stream": True}, MockModelClient(), deltas)
    assert isinstance(output, dict)
    assert len(deltas) > 1
    assert "".join(deltas) == output["text"]


async def test_no_deltas_without_stream() -> None:
    deltas: list[str] = []
    await run({"prompt": "Hello there"}, MockModelClient(), deltas)
    assert deltas == []


async def test_request_is_rendered_and_passed_through() -> None:
    model = RecordingModel("plain")
    config = {
        "prompt": "About {{ input.topic }}",
        "system": "You know {{ input.topic }}.",
        "temperature": 0.2,
        "maxTokens": 50,
    }
    output = await run(config, model)
    [request] = model.requests
    assert request.model == "default-model"
    assert request.prompt == "About rivers"
    assert request.system == "You know rivers."
    assert request.temperature == 0.2
    assert request.max_tokens == 50
    assert request.response_format == "text"
    assert isinstance(output, dict)
    assert output["usage"] == {"promptTokens": 3, "completionTokens": 4, "totalTokens": 7}
    assert output["mock"] is False
    assert "json" not in output


async def test_object_valued_prompt_is_sent_as_json_text() -> None:
    model = RecordingModel("ok")
    await run({"prompt": "{{ input.doc }}"}, model)
    assert json.loads(model.requests[0].prompt) == {"title": "Nile"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [('{"a": 1}', {"a": 1}), ('```json\n{"a": 1}\n```', {"a": 1}), ("[1, 2]", [1, 2])],
)
async def test_json_answers_are_parsed(text: str, expected: JSON) -> None:
    output = await run({"prompt": "x", "responseFormat": "json"}, RecordingModel(text))
    assert isinstance(output, dict)
    assert output["json"] == expected


@pytest.mark.parametrize("text", ["not json", '{"a": 1', "NaN", ""])
async def test_unparseable_json_answer_fails_permanently(text: str) -> None:
    with pytest.raises(PermanentStepError) as caught:
        await run({"prompt": "x", "responseFormat": "json"}, RecordingModel(text))
    assert caught.value.code == "INVALID_JSON"


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"prompt": ""},
        {"prompt": "x", "temperature": 2.5},
        {"prompt": "x", "temperature": -0.1},
        {"prompt": "x", "maxTokens": 0},
        {"prompt": "x", "maxTokens": 128_001},
        {"prompt": "x", "responseFormat": "xml"},
        {"prompt": "x", "max_tokens": 5},
        {"prompt": "x", "extra": True},
    ],
)
def test_config_validation(config: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError):
        Config.model_validate(config)


async def test_mock_is_deterministic_and_respects_max_tokens() -> None:
    mock = MockModelClient()
    request = CompletionRequest(model="m", prompt="one two three four five", max_tokens=3)
    first, second = await mock.complete(request), await mock.complete(request)
    assert first == second
    assert first.text == "Mock completion: one"
    assert first.finish_reason == "length"
    await mock.aclose()


@pytest.mark.parametrize("key", [None, ""])
def test_no_key_builds_the_mock(key: str | None) -> None:
    assert isinstance(build_model_client(key, None), MockModelClient)


async def test_a_key_builds_the_openai_client() -> None:
    from treadle.ai.openai_client import OpenAIModelClient

    client = build_model_client("sk-test", "http://127.0.0.1:9/v1")
    assert isinstance(client, OpenAIModelClient)
    await client.aclose()
