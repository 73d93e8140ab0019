"""Sandboxed Jinja2 templates and expressions for workflow configs: the public API.

Invariants:
- Templates compile and run only in the hardened ``Sandbox`` of ``treadle.engine.sandbox``, each
  public call under a fresh budget (see that module for the limits and what they guard).
- Results are JSON values copied out of the sandbox, never host objects; every failure is a
  ``TemplateError`` whose message says what went wrong and in which template.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import sys
import time
from collections.abc import Callable, ItemsView, Iterator, KeysView, ValuesView
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from jinja2 import Undefined, nodes
from jinja2 import exceptions as jinja_errors
from jinja2.environment import Template, TemplateExpression
from jinja2.parser import Parser

from treadle.engine.json import JSON, JSONObject
from treadle.engine.sandbox import (
    CACHE_SIZE,
    MAX_CALL_OUTPUT,
    MAX_DEPTH,
    MAX_INT_BITS,
    MAX_ITEMS,
    MAX_ITERATIONS,
    MAX_SCAN,
    MAX_SECONDS,
    MAX_SOURCE_CHARS,
    MAX_STEP_SECONDS,
    MAX_STRING,
    MAX_WORK,
    Allowance,
    Sandbox,
    SandboxRange,
    SliceSpent,
    TemplateError,
    budget,
    call_budget,
    check_size,
    harden,
    type_name,
)

__all__ = [
    "CACHE_SIZE",
    "MAX_CALL_OUTPUT",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "MAX_ITERATIONS",
    "MAX_SCAN",
    "MAX_SECONDS",
    "MAX_SOURCE_CHARS",
    "MAX_STEP_SECONDS",
    "MAX_STRING",
    "MAX_WORK",
    "RENDER_THREADS",
    "SLICE_SECONDS",
    "Allowance",
    "HandOff",
    "TemplateEngine",
    "TemplateError",
]

# How long a render may hold the event loop before it is restarted in a thread, and how many
# threads render at once per process (heavy renders queue for them; light ones never do).
SLICE_SECONDS: Final = 0.01
RENDER_THREADS: Final = 1  # threads share the GIL: a second one adds no speed, only contention
SWITCH_INTERVAL: Final = 0.0005


class HandOff(Exception):  # noqa: N818 - a signal to the worker, not an error of the step
    """An inline step's render needs more than its slice: run the step as a claimed step.

    Inline steps run inside the claiming transaction, which must not wait for a thread; the
    executor lets this propagate so the worker can claim the step and run it outside.
    """


# --- results -----------------------------------------------------------------------------------

_SEQUENCE_RESULTS: Final = (list, tuple, SandboxRange, KeysView, ValuesView, ItemsView, Iterator)


class _JsonBuilder:
    """Copies a template result into fresh JSON values; refuses host objects and huge results."""

    def __init__(self) -> None:
        self.left = MAX_STRING

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise TemplateError(f"the result is larger than {MAX_STRING:,} characters")

    def build(self, value: Any, depth: int = 0) -> JSON:
        if depth > MAX_DEPTH:
            raise TemplateError("the result is nested too deeply")
        if isinstance(value, dict):
            self.take(2)
            return {self._key(key): self.build(item, depth + 1) for key, item in value.items()}
        if isinstance(value, _SEQUENCE_RESULTS):
            self.take(2)
            return [self._item(item, depth) for item in value]
        return self._scalar(value)

    def _item(self, item: Any, depth: int) -> JSON:
        self.take(1)
        return self.build(item, depth + 1)

    def _key(self, key: Any) -> str:
        self.take(1)
        if isinstance(key, str):
            self.take(len(key))
            return str(key)
        if key is None or isinstance(key, int | float):
            return json.dumps(key)  # the key JSON itself would write
        raise TemplateError(f"an object key is a {type_name(key)}; keys must be strings")

    def _scalar(self, value: Any) -> JSON:
        if isinstance(value, Undefined):
            str(value)  # a StrictUndefined raises its precise UndefinedError or SecurityError
            raise TemplateError("the result is undefined")
        if isinstance(value, str):
            self.take(len(value))
            return str(value)  # a Markup becomes a plain str
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            self.take(value.bit_length() // 3)
            return int(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise TemplateError(f"the result {value} is not a finite number")
            return float(value)
        raise TemplateError(f"the result is a {type_name(value)}, which is not a JSON value")


def _to_json(value: Any) -> JSON:
    builder = _JsonBuilder()
    result = builder.build(value)
    budget().emit(MAX_STRING - builder.left)
    return result


def _stream(template: Template, context: JSONObject) -> str:
    chunks: list[str] = []
    size = 0
    for chunk in template.generate(context):  # stop as soon as the text is too long
        size += len(chunk)
        check_size(size, MAX_STRING, "the rendered text")
        chunks.append(chunk)
    budget().emit(size)
    return "".join(chunks)


def _has_template(text: str) -> bool:
    return "{{" in text or "{%" in text


def _describe(exc: Exception) -> str:
    if isinstance(exc, TemplateError):
        return exc.message
    if isinstance(exc, jinja_errors.TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    if isinstance(exc, jinja_errors.SecurityError):
        return f"not allowed: {exc}"
    if isinstance(exc, jinja_errors.UndefinedError):
        return f"undefined value: {exc.message}"
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _located(kind: str, source: str, path: str = "") -> Iterator[None]:
    """Turn any failure into a TemplateError naming the template and where it sits."""
    try:
        yield
    except SliceSpent:
        raise
    except Exception as exc:
        snippet = source if len(source) <= 60 else source[:57] + "..."
        where = f" at {path}" if path else ""
        raise TemplateError(f"{kind} {snippet!r}{where}: {_describe(exc)}") from exc


def _check_source(source: str) -> None:
    if len(source) > MAX_SOURCE_CHARS:
        raise TemplateError(f"too long ({len(source):,} characters; limit {MAX_SOURCE_CHARS:,})")


def _sole_expression(tree: nodes.Template) -> nodes.Expr | None:
    """The expression of a template that is one ``{{ … }}`` with only whitespace around it."""
    if len(tree.body) != 1 or not isinstance(tree.body[0], nodes.Output):
        return None
    parts = [
        part
        for part in tree.body[0].nodes
        if not (isinstance(part, nodes.TemplateData) and not part.data.strip())
    ]
    if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData):
        return parts[0]
    return None


def _strings(value: JSON, path: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    if depth > MAX_DEPTH:
        raise TemplateError(f"the value at {path or 'the top level'} is nested too deeply")
    if isinstance(value, str):
        yield value, path
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{path}[{index}]", depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            yield key, child
            yield from _strings(item, child, depth + 1)


def _timed(work: Callable[[], JSON], allowance: Allowance, slice_seconds: float | None) -> JSON:
    """Run ``work`` under a fresh budget ending with the allowance; charge it the time taken."""
    start = time.monotonic()
    deadline = min(start + max(allowance.seconds, 0.0), allowance.deadline)
    if deadline <= start:
        raise TemplateError(f"the step's templates used up their {MAX_STEP_SECONDS:g} s")
    slice_end = math.inf if slice_seconds is None else start + slice_seconds
    try:
        with call_budget(deadline, slice_end):
            return work()
    finally:
        allowance.seconds -= time.monotonic() - start


class TemplateEngine:
    """Compiles (with caching) and runs sandboxed templates and expressions."""

    def __init__(self) -> None:
        self._env = Sandbox()
        # Compiling is ~50x slower than running, so cache by source (lru_cache is thread-safe).
        self._template = functools.lru_cache(maxsize=CACHE_SIZE)(self._compile_template)
        self._expression = functools.lru_cache(maxsize=CACHE_SIZE)(self._compile_expression)
        self._threads: ThreadPoolExecutor | None = None

    def close(self) -> None:
        """Stop the render threads (renders still running end by their own deadline)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    def render(self, value: JSON, context: JSONObject) -> JSON:
        """Render the templates in ``value`` (dict keys and values, list items) against ``context``.

        A string that is exactly one ``{{ expression }}`` (whitespace around allowed) yields the
        expression's JSON value; other strings with ``{{``/``{%`` render to text; the rest come
        back unchanged.

        Raises:
            TemplateError: a template is invalid, fails, or breaks a size or time limit.
        """
        with call_budget():
            return self._render(value, context, "", 0)

    async def render_bounded(self, value: JSON, context: JSONObject, allowance: Allowance) -> JSON:
        """``render`` without holding the event loop for long, within the step's ``allowance``.

        Raises:
            TemplateError: as ``render``, or the step's renders ran out of time.
            HandOff: an inline step's render outgrew its slice.
        """
        return await self._bounded(lambda: self._render(value, context, "", 0), allowance)

    def evaluate(self, expression: str, context: JSONObject) -> JSON:
        """Evaluate a bare Jinja2 expression (no braces), e.g. ``input.n > 3``, to a JSON value.

        Raises:
            TemplateError: the expression is invalid, fails, or breaks a limit.
        """
        with call_budget():
            return self._evaluate(expression, context)

    async def evaluate_bounded(
        self, expression: str, context: JSONObject, allowance: Allowance
    ) -> JSON:
        """``evaluate`` without holding the event loop for long (see ``render_bounded``)."""
        return await self._bounded(lambda: self._evaluate(expression, context), allowance)

    def _evaluate(self, expression: str, context: JSONObject) -> JSON:
        with _located("expression", expression):
            return _to_json(self._expression(expression)(context))

    async def _bounded(self, work: Callable[[], JSON], allowance: Allowance) -> JSON:
        """Run ``work`` on the loop for at most a slice; if it needs longer, start it again in
        a render thread (deterministic templates give the same result) and await that."""
        try:
            return _timed(work, allowance, SLICE_SECONDS)
        except SliceSpent:
            if allowance.inline:
                raise HandOff from None
        if self._threads is None:
            # A render thread holds the GIL until asked to drop it; a short switch interval
            # keeps the loop (and aiosqlite's threads) waiting well under a millisecond for it.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
            self._threads = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="template")
        future = self._threads.submit(_timed, work, allowance, None)
        return await asyncio.wrap_future(future)

    def check_template(self, value: JSON) -> None:
        """Raise TemplateError if a string in ``value`` (keys included) is not a valid template."""
        with call_budget():
            for source, path in _strings(value, ""):
                if _has_template(source):
                    with _located("template", source, path):
                        self._template(source)

    def check_expression(self, expression: str) -> None:
        """Raise TemplateError if ``expression`` is not a valid bare Jinja2 expression."""
        with call_budget(), _located("expression", expression):
            self._expression(expression)

    def _render(self, value: JSON, context: JSONObject, path: str, depth: int) -> JSON:
        if depth > MAX_DEPTH:
            raise TemplateError(f"the value at {path or 'the top level'} is nested too deeply")
        if isinstance(value, str):
            return self._render_string(value, context, path)
        if isinstance(value, list):
            return [
                self._render(item, context, f"{path}[{index}]", depth + 1)
                for index, item in enumerate(value)
            ]
        if isinstance(value, dict):
            rendered: JSONObject = {}
            for key, item in value.items():
                child = f"{path}.{key}" if path else key
                name = self._render_key(key, context, child)
                if name in rendered:
                    raise TemplateError(f"key {name!r} at {path or 'the top level'} repeats")
                rendered[name] = self._render(item, context, child, depth + 1)
            return rendered
        return value

    def _render_string(self, source: str, context: JSONObject, path: str) -> JSON:
        if not _has_template(source):
            return source  # fast path: most strings hold no template at all
        with _located("template", source, path):
            compiled = self._template(source)
            if isinstance(compiled, TemplateExpression):
                return _to_json(compiled(context))
            return _stream(compiled, context)

    def _render_key(self, key: str, context: JSONObject, path: str) -> str:
        name = self._render_string(key, context, path)
        if isinstance(name, str):
            return name
        if name is None or isinstance(name, int | float):
            return str(name)  # the text Jinja would print
        raise TemplateError(f"key {key!r} at {path} must render to a string")

    def _compile_template(self, source: str) -> Template | TemplateExpression:
        _check_source(source)
        tree = self._env.parse(source)
        expression = _sole_expression(tree)
        if expression is not None:
            return self._from_expression(expression)
        return self._env.from_string(self._harden(tree))

    def _compile_expression(self, source: str) -> TemplateExpression:
        _check_source(source)
        parser = Parser(self._env, source, state="variable")
        expression = parser.parse_expression()
        if not parser.stream.eos:
            lineno = parser.stream.current.lineno
            raise jinja_errors.TemplateSyntaxError("unexpected text after the expression", lineno)
        return self._from_expression(expression)

    def _from_expression(self, expression: nodes.Expr) -> TemplateExpression:
        # What Environment.compile_expression does, plus the hardening pass.
        body = [nodes.Assign(nodes.Name("result", "store"), expression, lineno=1)]
        template = self._env.from_string(self._harden(nodes.Template(body, lineno=1)))
        return TemplateExpression(template, undefined_to_none=False)

    def _harden(self, tree: nodes.Template) -> nodes.Template:
        return harden(tree, self._env)
