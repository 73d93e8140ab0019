"""``ModelClient`` over the OpenAI Chat Completions API (OpenAI or any compatible server)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final, cast

import httpx
import httpx2
import openai
from openai import AsyncOpenAI, omit

from treadle.engine.ai import Completion, CompletionRequest, OnDelta
from treadle.engine.steps import PermanentStepError, RetryableStepError, StepError

_ERROR_CODE_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.completion_usage import CompletionUsage


class OpenAIModelClient:
    """Chat completions with the engine's error semantics.

    Args:
        api_key: the API key; kept inside the SDK client and never put in a message.
        base_url: an OpenAI-compatible server's ``.../v1`` URL, or None for OpenAI's.
        http_client: a client to send through (tests, proxies); the caller keeps ownership.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        # OpenAI's own API wants max_completion_tokens; compatible servers mostly know max_tokens.
        self._legacy_max_tokens = base_url is not None
        self._owns_http_client = http_client is None
        self._client = AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,  # the engine's retry policy decides; SDK retries would multiply it
            # The SDK accepts httpx clients as well as httpx2 ones, but is typed for httpx2 only.
            http_client=cast("httpx2.AsyncClient | None", http_client),
        )

    async def complete(
        self, request: CompletionRequest, *, on_delta: OnDelta | None = None
    ) -> Completion:
        """Run one completion; stream it through ``on_delta`` when given.

        Raises:
            RetryableStepError: unreachable, timed out, rate limited or 5xx/408/409.
            PermanentStepError: any other rejection (bad model, bad key, bad request).
        """
        try:
            if on_delta is None:
                return await self._complete(request)
            return await self._stream(request, on_delta)
        except openai.APIError as exc:
            # ``from None``: the SDK's own message may echo a masked key or the prompt.
            raise translate_error(exc) from None
        except (httpx.HTTPError, httpx2.HTTPError):
            # Errors while reading a stream surface from the HTTP library, not the SDK.
            raise RetryableStepError("model API connection failed", code="AI_UNAVAILABLE") from None

    async def _complete(self, request: CompletionRequest) -> Completion:
        response = await self._client.chat.completions.create(
            model=request.model,
            messages=_messages(request),
            temperature=omit if request.temperature is None else request.temperature,
            max_tokens=self._max_tokens(request, legacy=True),
            max_completion_tokens=self._max_tokens(request, legacy=False),
            response_format=_response_format(request),
            timeout=request.timeout_seconds,
        )
        if not response.choices:
            raise RetryableStepError("model API returned no choices", code="AI_UNAVAILABLE")
        choice = response.choices[0]
        return _completion(
            choice.message.content or "", response.model, choice.finish_reason, response.usage
        )

    async def _stream(self, request: CompletionRequest, on_delta: OnDelta) -> Completion:
        stream = await self._client.chat.completions.create(
            model=request.model,
            messages=_messages(request),
            temperature=omit if request.temperature is None else request.temperature,
            max_tokens=self._max_tokens(request, legacy=True),
            max_completion_tokens=self._max_tokens(request, legacy=False),
            response_format=_response_format(request),
            timeout=request.timeout_seconds,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        model, finish_reason, usage = request.model, "stop", None
        async with stream:
            async for chunk in stream:
                model = chunk.model or model
                usage = chunk.usage or usage  # the last chunk carries usage and no choices
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                finish_reason = choice.finish_reason or finish_reason
                if choice.delta.content:
                    parts.append(choice.delta.content)
                    await on_delta(choice.delta.content)
        return _completion("".join(parts), model, finish_reason, usage)

    def _max_tokens(self, request: CompletionRequest, *, legacy: bool) -> Any:
        if request.max_tokens is None or legacy != self._legacy_max_tokens:
            return omit
        return request.max_tokens

    async def aclose(self) -> None:
        """Close the SDK's HTTP client, unless the caller passed in its own."""
        if self._owns_http_client:
            await self._client.close()


def _messages(request: CompletionRequest) -> list[ChatCompletionMessageParam]:
    messages: list[ChatCompletionMessageParam] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages.append({"role": "user", "content": request.prompt})
    return messages


def _response_format(request: CompletionRequest) -> Any:
    return {"type": "json_object"} if request.response_format == "json" else omit


def _completion(
    text: str, model: str, finish_reason: str, usage: CompletionUsage | None
) -> Completion:
    return Completion(
        text=text,
        model=model,
        finish_reason=finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        mock=False,
    )


def translate_error(exc: openai.APIError) -> StepError:
    """Map an SDK error to a step error whose message carries no key, prompt or SDK text."""
    if isinstance(exc, openai.APITimeoutError):
        return RetryableStepError("model API timed out", code="AI_UNAVAILABLE")
    if isinstance(exc, openai.APIConnectionError):
        return RetryableStepError("model API is unreachable", code="AI_UNAVAILABLE")
    if not isinstance(exc, openai.APIStatusError):
        return RetryableStepError("model API sent an unusable response", code="AI_UNAVAILABLE")
    status = exc.status_code
    # Only a short token-like error code is kept; it names the problem (e.g. invalid_api_key).
    code = exc.code if exc.code and _ERROR_CODE_RE.fullmatch(exc.code) else None
    detail = f"model API returned HTTP {status}" + (f" ({code})" if code else "")
    if status == 429 and exc.code != "insufficient_quota":  # no quota: retrying cannot help
        return RetryableStepError(detail, code="AI_RATE_LIMITED")
    if status in (408, 409) or status >= 500:
        return RetryableStepError(detail, code="AI_UNAVAILABLE")
    return PermanentStepError(detail, code="AI_REJECTED")
