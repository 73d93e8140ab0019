"""The one place secrets are redacted."""

from __future__ import annotations

import logging
import sys

from treadle.redact import PLACEHOLDER, redact, restore_definition, scrub_text, scrubbing


def test_sensitive_keys_are_redacted_at_any_depth() -> None:
    value = {
        "config": {
            "secret": "s",
            "headers": {"Authorization": "Bearer x", "X-Api-Key": "k", "Accept": "json"},
            "maxTokens": 200,
            "body": [{"accessToken": "t", "password": "p", "n": 1}],
        },
        "usage": {"promptTokens": 3},
    }
    assert redact(value) == {
        "config": {
            "secret": PLACEHOLDER,
            "headers": {"Authorization": PLACEHOLDER, "X-Api-Key": PLACEHOLDER, "Accept": "json"},
            "maxTokens": 200,
            "body": [{"accessToken": PLACEHOLDER, "password": PLACEHOLDER, "n": 1}],
        },
        "usage": {"promptTokens": 3},
    }


def test_free_text_loses_url_credentials_bearer_tokens_and_known_secrets() -> None:
    text = "GET https://ann:hunter22@api.test/x with Bearer abc.def and key sk-live-12345678"
    cleaned = scrub_text(text, ["sk-live-12345678"])
    assert "hunter22" not in cleaned
    assert "abc.def" not in cleaned
    assert "sk-live-12345678" not in cleaned
    assert "api.test/x" in cleaned


def test_restore_puts_back_secrets_by_node_id() -> None:
    stored = {"nodes": [{"id": "a", "config": {"secret": "real", "url": "u"}}], "edges": []}
    shown = redact(stored)
    assert isinstance(shown, dict)
    moved = {"nodes": [{"id": "b", "config": {}}, *shown["nodes"]], "edges": []}
    restored = restore_definition(moved, stored)
    assert restored["nodes"][1] == {"id": "a", "config": {"secret": "real", "url": "u"}}
    changed = {"nodes": [{"id": "a", "config": {"secret": "new", "url": "u"}}]}
    assert restore_definition(changed, stored)["nodes"][0]["config"]["secret"] == "new"


def test_log_formatter_scrubs_messages_and_tracebacks() -> None:
    record = logging.LogRecord("t", logging.ERROR, "f", 1, "key=%s", ("topsecret-value",), None)
    try:
        raise RuntimeError("failed with topsecret-value")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    formatter = scrubbing(logging.Formatter)()
    formatter.secrets = ("topsecret-value",)  # type: ignore[attr-defined]
    line = formatter.format(record)
    assert "RuntimeError" in line
    assert "topsecret-value" not in line
    assert record.exc_info is not None  # the record itself is untouched for other handlers
