"""The model-client port used by ``AI_COMPLETION``; adapters live in ``treadle.ai``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class CompletionRequest:
    model: str
    prompt: str
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    response_format: Literal["text", "json"] = "text"
    timeout_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    mock: bool


OnDelta = Callable[[str], Awaitable[None]]


class ModelClient(Protocol):
    """Chat-completion client; ``on_delta`` set means stream and report each text chunk."""

    async def complete(
        self, request: CompletionRequest, *, on_delta: OnDelta | None = None
    ) -> Completion: ...

    async def aclose(self) -> None: ...
