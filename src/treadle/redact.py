"""Secret redaction, in one place: API answers, step outputs, errors and logs use it.

What counts as a secret: values under keys such as ``secret``, ``password``, ``token``,
``authorization``, ``cookie`` or ``api-key`` (any case, ``-``/``_`` alike), credentials in URLs
(``https://user:pass@host``), bearer tokens in free text, and the process's own keys (JWT secret,
OpenAI key) registered at start-up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Final

from treadle.engine.json import JSON, JSONObject

PLACEHOLDER: Final = "[REDACTED]"
_SENSITIVE_KEY: Final = re.compile(
    # "token" but not "tokens": maxTokens and usage counts are not secrets.
    r"(secret|password|passwd|token(?!s)|authorization|cookie|api[-_]?key|credential)",
    re.IGNORECASE,
)
_URL_CREDENTIALS: Final = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+(:[^/\s@]*)?@", re.I
)
_BEARER: Final = re.compile(r"(bearer|basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_MIN_SECRET_LENGTH: Final = 8


def is_sensitive_key(key: str) -> bool:
    return bool(_SENSITIVE_KEY.search(key))


def redact(value: JSON) -> JSON:
    """A copy of ``value`` with every sensitive key's value replaced by the placeholder."""
    if isinstance(value, dict):
        return {
            key: (PLACEHOLDER if is_sensitive_key(key) and isinstance(item, str) else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def scrub_text(text: str, known: Iterable[str] = ()) -> str:
    """Remove URL credentials, bearer tokens and any of the ``known`` secret values."""
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{PLACEHOLDER}@", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {PLACEHOLDER}", text)
    for secret in known:
        if len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, PLACEHOLDER)
    return text


def restore(new: JSON, old: JSON) -> JSON:
    """Put back stored secrets where a client sent the placeholder it was shown.

    A client that reads a definition and writes it back unchanged must not replace its secrets
    with the placeholder text.
    """
    if isinstance(new, dict) and isinstance(old, dict):
        return {
            key: old[key] if item == PLACEHOLDER and key in old else restore(item, old.get(key))
            for key, item in new.items()
        }
    if isinstance(new, list) and isinstance(old, list):
        return [restore(item, old[i]) if i < len(old) else item for i, item in enumerate(new)]
    return new


def restore_definition(new: JSONObject, old: JSONObject) -> JSONObject:
    """``restore`` node by node, matching nodes by id (order may change between versions)."""
    old_nodes = {_node_id(node): node for node in _nodes(old)}
    nodes = [
        restore(node, old_nodes.get(_node_id(node))) if _node_id(node) else node
        for node in _nodes(new)
    ]
    return {**new, "nodes": nodes} if "nodes" in new else new


def _node_id(node: JSON) -> str | None:
    # Input is not validated yet: an id may be any JSON value.
    node_id = node.get("id") if isinstance(node, dict) else None
    return node_id if isinstance(node_id, str) else None


def _nodes(definition: Mapping[str, JSON]) -> list[JSON]:
    nodes = definition.get("nodes")
    return nodes if isinstance(nodes, list) else []


def scrubbing(formatter_class: type[logging.Formatter]) -> type[logging.Formatter]:
    """A subclass of ``formatter_class`` whose output (message and traceback) is scrubbed.

    Formatting, not filtering, is where this belongs: a filter that edited the record would
    change it for every other handler too.
    """

    class Scrubbing(formatter_class):  # type: ignore[misc,valid-type]
        secrets: tuple[str, ...] = ()

        def format(self, record: logging.LogRecord) -> str:
            return scrub_text(super().format(record), self.secrets)

    return Scrubbing
