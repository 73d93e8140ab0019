"""Secret redaction, in one place: API answers, step outputs, errors and logs use it.

What counts as a secret: values under keys such as ``secret``, ``password``, ``token``,
``authorization``, ``cookie`` or ``api-key`` (any case, ``-``/``_`` alike); every value of a
``headers`` or ``query`` object (HTTP_REQUEST/WEBHOOK configs); every query-string value and the
credentials of a URL (``https://user:pass@host/?sig=…``); bearer tokens in free text; and the
process's own keys (JWT secret, OpenAI key) registered at start-up.

Every pattern here runs in linear time: none can backtrack over a long run of text, so a huge
string in a definition costs one pass, not a stalled API.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Final

from treadle.engine.json import JSON, JSONObject
from treadle.errors import ValidationError

PLACEHOLDER: Final = "[REDACTED]"
# Matched against the lower-cased key: literal words, which the regex engine finds with a fast
# substring search instead of an attempt at every character.
_SENSITIVE_WORDS: Final = (
    "secret",
    "password",
    "passwd",
    "authorization",
    "cookie",
    "credential",
    "apikey",
    "api-key",
    "api_key",
)
_TOKEN: Final = re.compile(r"token(?!s)")  # "token" but not "tokens": maxTokens is no secret
# Objects whose every value is secret (header values, query parameters).
_SECRET_OBJECTS: Final = frozenset({"headers", "query"})
# Starts at the literal "://" (never at each letter of a scheme) and uses possessive quantifiers:
# a failed attempt scans only up to the next "/", whitespace or "@", so attempts never overlap.
# A URL also ends at a quote, bracket or backslash: in JSON or quoted text the scrub must not
# swallow the closing quote.
_URL_CREDENTIALS: Final = re.compile(r"://[^/\s:@\"'<>\\`]++(?::[^/\s@\"'<>\\`]*+)?+@")
# A URL's query: always matches from "://" (so a later "://" inside it is never re-scanned).
_URL_QUERY: Final = re.compile(r"://[^\s?#\"'<>\\`]*+(\?[^\s#\"'<>\\`]*+)?")
_QUERY_VALUE: Final = re.compile(r"=[^&;\s#\"'<>\\`]++")
# Searched in the lower-cased UTF-8 bytes, so each pattern starts with a literal word that the regex
# engine finds by fast substring search (an IGNORECASE pattern would start an attempt at every
# character); possessive runs keep each attempt to its own whitespace and token.
_BEARER: Final = {
    word: re.compile(re.escape(word) + rb"\s++([a-z0-9._~+/=-]++)")
    for word in (b"bearer", b"basic")
}
_PLACEHOLDER_BYTES: Final = PLACEHOLDER.encode()
_MAX_MATCHES: Final = 1_000  # per string and pattern; past that, see _scrub_queries/_scrub_bearer
_AUTHORITY_END: Final = re.compile(r"[/?#\\]")
_MIN_SECRET_LENGTH: Final = 8


def is_sensitive_key(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in _SENSITIVE_WORDS) or bool(_TOKEN.search(lowered))


def redact(value: JSON) -> JSON:
    """A copy of ``value`` as API answers show it: every secret replaced by the placeholder."""
    if isinstance(value, dict):
        return {key: _redact_item(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def _redact_item(key: str, item: JSON) -> JSON:
    if is_sensitive_key(key) and isinstance(item, str):
        return PLACEHOLDER
    if key.lower() in _SECRET_OBJECTS and isinstance(item, dict):
        return {name: PLACEHOLDER if part is not None else None for name, part in item.items()}
    return redact(item)


def scrub_text(text: str, known: Iterable[str] = ()) -> str:
    """Remove URL credentials and query values, bearer tokens and the ``known`` secret values."""
    if "://" in text:  # substring checks are C-fast: most text skips the patterns entirely
        if "@" in text:
            text = _URL_CREDENTIALS.sub(f"://{PLACEHOLDER}@", text)
        if "?" in text:
            text = _scrub_queries(text)
    text = _scrub_bearer(text)
    for secret in known:
        if len(secret) >= _MIN_SECRET_LENGTH:
            text = text.replace(secret, PLACEHOLDER)
    return text


def _scrub_queries(text: str) -> str:
    """Replace every query value of every URL in ``text`` (``?a=1&b=2`` → ``?a=…&b=…``)."""
    pieces: list[str] = []
    last = 0
    for count, match in enumerate(_URL_QUERY.finditer(text)):
        if count >= _MAX_MATCHES:
            break  # bounded work: the rest of the text loses every "=value" below
        if match.group(1) is not None:
            start, end = match.span(1)
            pieces += [text[last:start], _QUERY_VALUE.sub(f"={PLACEHOLDER}", text[start:end])]
            last = end
    else:
        return "".join([*pieces, text[last:]])
    return "".join([*pieces, _QUERY_VALUE.sub(f"={PLACEHOLDER}", text[last:])])


def _scrub_bearer(text: str) -> str:
    """Replace the token after ``Bearer``/``Basic`` (any case), keeping the text around it.

    Works on UTF-8 bytes, whose ``lower()`` changes only ASCII letters and so keeps every
    position: matches found in the lower-cased copy are replaced at the same place in the text.
    """
    raw = text.encode("utf-8", "surrogatepass")
    lowered = raw.lower()
    if b"bearer" not in lowered and b"basic" not in lowered:
        return text
    for word in _BEARER:
        raw, lowered = _replace_tokens(word, raw, lowered)
    return raw.decode("utf-8", "surrogatepass")


def _replace_tokens(word: bytes, raw: bytes, lowered: bytes) -> tuple[bytes, bytes]:
    """Replace the tokens after ``word`` found in ``lowered`` at the same places in ``raw``.

    After ``_MAX_MATCHES`` tokens the rest comes from ``lowered`` in one C-level pass (bounded
    Python work): a text made of tokens comes back partly lower-cased, never with one left in it.
    """
    pattern = _BEARER[word]
    pieces: list[bytes] = []
    last = 0
    for count, match in enumerate(pattern.finditer(lowered)):
        if count >= _MAX_MATCHES:
            pieces.append(pattern.sub(word + b" " + _PLACEHOLDER_BYTES, lowered[last:]))
            break
        start, end = match.span(1)
        pieces += [raw[last:start], _PLACEHOLDER_BYTES]
        last = end
    else:
        pieces.append(raw[last:])
    result = b"".join(pieces)
    return result, result.lower()


def restore_definition(new: JSONObject, old: JSONObject) -> JSONObject:
    """Put back stored secrets where a client sent the placeholder it was shown.

    A client that reads a definition and writes it back unchanged must not replace its secrets
    with the placeholder text. Nodes are matched by id (order may change between versions), and a
    node keeps its stored secrets only while its destination (scheme, host and port of its
    ``url``) is unchanged: otherwise anyone allowed to edit the workflow could send them to a
    host of their choosing.

    Raises:
        ValidationError: a placeholder stands for a stored secret that cannot be kept because
            the node's destination changed (or it sits inside text that was edited); the
            message and ``fields`` name where.
    """
    old_nodes = {_node_id(node): node for node in _nodes(old)}
    nodes: list[JSON] = []
    for index, node in enumerate(_nodes(new)):
        previous = old_nodes.get(_node_id(node)) if _node_id(node) else None
        if previous is None:
            nodes.append(node)
            continue
        kept = _destination(node) == _destination(previous)
        nodes.append(_Restorer(kept).restore(node, previous, f"definition.nodes.{index}"))
    return {**new, "nodes": nodes} if "nodes" in new else new


class _Restorer:
    def __init__(self, keep: bool) -> None:
        self.keep = keep

    def restore(self, new: JSON, old: JSON, path: str) -> JSON:
        if isinstance(new, dict) and isinstance(old, dict):
            return {
                key: self._item(item, old[key], f"{path}.{key}") if key in old else item
                for key, item in new.items()
            }
        if isinstance(new, list) and isinstance(old, list):
            return [
                self._item(item, old[i], f"{path}.{i}") if i < len(old) else item
                for i, item in enumerate(new)
            ]
        return new

    def _item(self, new: JSON, old: JSON, path: str) -> JSON:
        if not isinstance(new, str) or PLACEHOLDER not in new or new == old:
            return self.restore(new, old, path)
        if new == PLACEHOLDER or (isinstance(old, str) and new == scrub_text(old)):
            if self.keep:
                return old  # what the client was shown, written back: the stored secret
            raise _unrestorable(path, "the node's url now points to another destination")
        if isinstance(old, str) and scrub_text(old) != old:
            raise _unrestorable(path, "the text around it was edited")
        return new  # the placeholder text was there before: the user's own text


def _unrestorable(path: str, why: str) -> ValidationError:
    message = (
        f"{path}: {PLACEHOLDER} stands for a stored secret that is not kept because {why}; "
        "send the real value"
    )
    return ValidationError(f"invalid input: {message}", fields={path: message})


def _destination(node: JSON) -> tuple[str, str] | None:
    """Scheme and ``host[:port]`` of the node's ``url`` (None when it has none).

    Parsed by hand: urlsplit refuses the ``[REDACTED]@`` that answers show for credentials.
    """
    config = node.get("config") if isinstance(node, dict) else None
    url = config.get("url") if isinstance(config, dict) else None
    if not isinstance(url, str):
        return None
    scheme, separator, rest = url.strip().partition("://")
    if not separator:
        return ("", url)  # no URL yet (e.g. a template): only the same text is the same place
    authority = _AUTHORITY_END.split(rest, maxsplit=1)[0]
    return (scheme.lower(), authority.rpartition("@")[2].lower())


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
