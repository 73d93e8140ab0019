"""JSON logs on stdout, with request/run context from contextvars."""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, Final
from urllib.parse import unquote_plus

from pythonjsonlogger.json import JsonFormatter

from treadle.redact import PLACEHOLDER, scrubbing

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
tenant_id_var: ContextVar[str | None] = ContextVar("tenant_id", default=None)
run_id_var: ContextVar[str | None] = ContextVar("run_id", default=None)
step_key_var: ContextVar[str | None] = ContextVar("step_key", default=None)

_CONTEXT: Final = {
    "request_id": request_id_var,
    "tenant_id": tenant_id_var,
    "run_id": run_id_var,
    "step_key": step_key_var,
}


# Query parameters whose values the access log may show; every other value is redacted
# (``?token=<JWT>`` on SSE and websocket URLs, signatures, keys clients put in URLs).
_SHOWN_QUERY: Final = frozenset({"page", "pageSize", "afterSeq", "limit", "status", "workflowId"})


def scrub_query(target: str) -> str:
    """``/path?token=abc&page=2`` as ``/path?token=[REDACTED]&page=2``."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    pairs = []
    for pair in query.split("&"):
        name, eq, value = pair.partition("=")
        if eq and value and unquote_plus(name) not in _SHOWN_QUERY:
            value = PLACEHOLDER
        pairs.append(f"{name}{eq}{value}")
    return f"{path}?{'&'.join(pairs)}"


class TreadleFormatter(scrubbing(JsonFormatter)):  # type: ignore[misc]
    """JSON, scrubbed; uvicorn's request lines lose their query values too."""

    def format(self, record: logging.LogRecord) -> str:
        args = record.args
        if record.name.startswith("uvicorn") and isinstance(args, tuple):
            record = copy.copy(record)  # other handlers keep the original
            record.args = tuple(_scrub_arg(arg) for arg in args)
        return str(super().format(record))


def _scrub_arg(arg: object) -> object:
    return scrub_query(arg) if isinstance(arg, str) and "?" in arg else arg


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """uvicorn's loggers without handlers of their own: their records (access lines, tracebacks
    of failed requests) reach the root logger's scrubbing JSON handler like everyone else's."""
    quiet = {"handlers": [], "propagate": True, "level": level.upper()}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {name: dict(quiet) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


class ContextFilter(logging.Filter):
    """Copies the current log context onto each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _CONTEXT.items():
            value = var.get()
            if value is not None:
                setattr(record, name, value)
        return True


def configure_logging(level: str, secrets: Iterable[str | None] = ()) -> None:
    """Install one JSON handler on the root logger; safe to call more than once.

    ``secrets`` (the JWT key, the OpenAI key) are scrubbed from every record, as are URL
    credentials and bearer tokens.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_treadle", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    formatter = TreadleFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    formatter.secrets = tuple(s for s in secrets if s)
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler._treadle = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("sqlalchemy.engine", "httpx", "httpcore", "taskiq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
