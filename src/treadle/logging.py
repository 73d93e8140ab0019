"""JSON logs on stdout, with request/run context from contextvars."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Final

from pythonjsonlogger.json import JsonFormatter

from treadle.redact import scrubbing

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
    formatter = scrubbing(JsonFormatter)("%(asctime)s %(levelname)s %(name)s %(message)s")
    formatter.secrets = tuple(s for s in secrets if s)  # type: ignore[attr-defined]
    handler.setFormatter(formatter)
    handler.addFilter(ContextFilter())
    handler._treadle = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("sqlalchemy.engine", "httpx", "httpcore", "taskiq"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
