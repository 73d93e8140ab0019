"""Model-client adapters behind ``treadle.engine.ai.ModelClient``.

Invariants:
- Without an API key the mock is used, so a fresh checkout runs with no account and no network.
- Adapters never retry (the engine's retry policy does) and never put an API key in a message.
"""

from __future__ import annotations

from treadle.ai.mock import MockModelClient
from treadle.engine.ai import ModelClient

__all__ = ["MockModelClient", "build_model_client"]


def build_model_client(api_key: str | None, base_url: str | None) -> ModelClient:
    """The OpenAI-compatible client when a key is set, else the offline mock.

    Args:
        api_key: ``OPENAI_API_KEY``; empty or None selects the mock (the SDK refuses no key).
        base_url: ``OPENAI_BASE_URL``; None means OpenAI's.
    """
    if not api_key:
        return MockModelClient()
    # Imported here: the SDK is large and the mock path never needs it.
    from treadle.ai.openai_client import OpenAIModelClient

    return OpenAIModelClient(api_key, base_url)
