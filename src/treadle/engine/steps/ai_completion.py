"""``AI_COMPLETION``: one chat completion through ``ctx.model``, optionally streamed live."""

from __future__ import annotations

import json
import re
from typing import ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from treadle.engine.ai import Completion, CompletionRequest
from treadle.engine.json import JSON, JSONObject
from treadle.engine.steps import PermanentStepError, StepContext

# Models often wrap JSON in a Markdown fence even when asked for a bare object.
_FENCE_RE: Final = re.compile(r"```(?:json)?\s*(.*?)\s*```", re.DOTALL | re.IGNORECASE)


class Config(BaseModel):
    """Configuration of an ``AI_COMPLETION`` node; ``prompt`` and ``system`` are templates."""

    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)

    prompt: str = Field(min_length=1)
    system: str | None = None
    model: str | None = Field(default=None, min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=128_000)
    response_format: Literal["text", "json"] = "text"
    stream: bool = False


class AiCompletion:
    """Renders the prompt, asks the model and returns text, usage and (for json) the object.

    With ``stream`` set, each text chunk goes to ``ctx.emit_delta`` as it arrives; the output
    still holds the full text.
    """

    name: ClassVar[str] = "AI_COMPLETION"
    config_model: ClassVar[type[BaseModel]] = Config

    async def run(self, config: BaseModel, ctx: StepContext) -> JSON:
        """Complete the rendered prompt and shape the output."""
        if not isinstance(config, Config):
            raise TypeError(f"{self.name} expects its own Config, got {type(config).__name__}")
        request = CompletionRequest(
            model=config.model or ctx.default_model,
            prompt=_as_prompt(await ctx.render(config.prompt)),
            system=None if config.system is None else _as_prompt(await ctx.render(config.system)),
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            response_format=config.response_format,
        )
        on_delta = ctx.emit_delta if config.stream else None
        completion = await ctx.model.complete(request, on_delta=on_delta)
        output = _output(completion)
        if config.response_format == "json":
            output["json"] = parse_json_text(completion.text)
        return output


def _as_prompt(value: JSON) -> str:
    # A prompt that is exactly one expression may render to an object; send it as JSON text.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _output(completion: Completion) -> JSONObject:
    return {
        "text": completion.text,
        "model": completion.model,
        "finishReason": completion.finish_reason,
        "usage": {
            "promptTokens": completion.prompt_tokens,
            "completionTokens": completion.completion_tokens,
            "totalTokens": completion.prompt_tokens + completion.completion_tokens,
        },
        "mock": completion.mock,
    }


def parse_json_text(text: str) -> JSON:
    """Parse a model's JSON answer, tolerating one surrounding Markdown code fence.

    Raises:
        PermanentStepError: the text is not JSON (code ``INVALID_JSON``).
    """
    fenced = _FENCE_RE.fullmatch(text.strip())
    candidate = fenced.group(1) if fenced else text
    try:
        parsed: JSON = json.loads(candidate, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise PermanentStepError(
            "the model's answer is not valid JSON", code="INVALID_JSON"
        ) from None
    return parsed


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


STEP = AiCompletion()
