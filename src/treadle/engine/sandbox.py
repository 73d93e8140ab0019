"""The sandbox under every workflow template: budgets, size guards, the Jinja2 environment, and
the AST hardening pass. ``treadle.engine.template`` is the public API built on it.

Invariants:
- Everything runs in an ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``: no dunder or
  ``_private`` attributes, no mutation of run data, no undefined value passing silently.
- Each public call gets a fresh budget (loop iterations, work units, output size, and a
  wall-clock backstop), and every operation that can allocate a lot (``*``, ``**``, ``+``,
  ``%``, ``~``, ``format``, slices, the amplifying filters and ``str`` methods) checks the size of
  its result before building it, so a template cannot exhaust memory or hold a worker for long.
  Tags that buffer output or recurse (macro, call, filter, block set, include, recursive loops)
  are rejected when compiling.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
import time
import types
from collections.abc import Callable, ItemsView, Iterable, Iterator, KeysView, ValuesView
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final, cast

from jinja2 import StrictUndefined, Undefined, filters, nodes, pass_environment, pass_eval_context
from jinja2.environment import Environment
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Cycler, Joiner, Namespace
from jinja2.visitor import NodeTransformer

MAX_SOURCE_CHARS: Final = 10_000
MAX_STRING: Final = 1 << 20  # characters in one string a template builds, renders or returns
MAX_ITEMS: Final = 1_000_000  # items in one list a template builds
MAX_SCAN: Final = 8 << 20  # size of one value a filter may walk or print
MAX_CALL_OUTPUT: Final = 4 << 20  # characters in everything one render() call returns
MAX_INT_BITS: Final = 10_000
MAX_ITERATIONS: Final = 100_000  # loop iterations per call, nested loops included
# Work per call, in units of roughly a microsecond: one unit per item Python code visits, or per
# _CHARS_PER_UNIT characters that C code copies or scans.
MAX_WORK: Final = 2_000_000
_CHARS_PER_UNIT: Final = 32
MAX_SECONDS: Final = 5.0  # backstop for costs the work units misjudge; the budget comes first
MAX_STEP_SECONDS: Final = 5.0  # wall-clock time all the renders of one step attempt may take
_SECONDS_PER_UNIT: Final = 1e-6
MAX_DEPTH: Final = 100
CACHE_SIZE: Final = 1024


class TemplateError(Exception):
    """A template or expression is invalid or failed; ``message`` is safe to show to users."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SliceSpent(Exception):  # noqa: N818 - a signal, not an error: the render moves, not fails
    """The render outgrew its short slice on the event loop; run it again where it may take long.

    Never shown to users: ``treadle.engine.template`` catches it and re-runs the render off the
    loop (or hands the whole step to a worker).
    """


@dataclass(slots=True)
class Allowance:
    """Wall-clock time all the renders of one step attempt may still take, shared by them.

    ``deadline`` (``time.monotonic()``) is the step's own timeout: no render outlives it, so a
    render still running in a thread when its step timed out stops soon after.
    """

    seconds: float = MAX_STEP_SECONDS
    deadline: float = math.inf
    # Inline steps render only on the loop, inside a transaction: past the slice the whole step
    # is handed to the claim-run-record path instead of waiting for a thread.
    inline: bool = False


@dataclass(slots=True)
class Budget:
    """What one public call may still spend: loop iterations, work units, output, time."""

    iterations: int = MAX_ITERATIONS
    work: int = MAX_WORK
    output: int = MAX_CALL_OUTPUT
    deadline: float = field(default_factory=lambda: time.monotonic() + MAX_SECONDS)
    slice_end: float = math.inf  # past it the render moves off the event loop (SliceSpent)
    ticks: int = 0

    def tick(self) -> None:
        """A cheap operation happened: look at the clock every few dozen of them."""
        self.ticks += 1
        if self.ticks & 31 == 0:
            self.check_clock()

    def iterate(self, count: int = 1) -> None:
        self.iterations -= count
        if self.iterations < 0:
            raise TemplateError(f"too many loop iterations (at most {MAX_ITERATIONS:,} per call)")
        self.check_clock()

    def spend(self, amount: int) -> None:
        self.work -= amount
        if self.work < 0:
            raise TemplateError("the template does too much work; simplify it")
        # Work about to be done counts already: a big operation never starts on the loop.
        self.check_clock(amount * _SECONDS_PER_UNIT)

    def check_clock(self, ahead: float = 0.0) -> None:
        now = time.monotonic()
        if now + ahead > self.slice_end:
            raise SliceSpent
        if now > self.deadline:
            raise TemplateError(
                f"the templates ran out of time (at most {MAX_SECONDS:g} s per template and "
                f"{MAX_STEP_SECONDS:g} s per step, within the step's timeout); simplify them"
            )

    def emit(self, size: int) -> None:
        self.output -= size
        if self.output < 0:
            raise TemplateError(f"rendered values add up to more than {MAX_CALL_OUTPUT:,} chars")


_BUDGET: Final[ContextVar[Budget | None]] = ContextVar("treadle_template_budget", default=None)


def budget() -> Budget:
    """The running call's budget."""
    # Outside a call (constant folding while compiling) each operation gets a throwaway budget,
    # so the per-operation size caps still apply.
    return _BUDGET.get() or Budget()


@contextlib.contextmanager
def call_budget(deadline: float = math.inf, slice_end: float = math.inf) -> Iterator[None]:
    """Give the calls inside the block one fresh budget, ending by ``deadline`` at the latest."""
    limit = min(time.monotonic() + MAX_SECONDS, deadline)
    token = _BUDGET.set(Budget(deadline=limit, slice_end=slice_end))
    try:
        yield
    finally:
        _BUDGET.reset(token)


# --- sizes -------------------------------------------------------------------------------------


def _size(value: object, cap: int = MAX_SCAN) -> int:
    """Roughly how many characters ``str(value)`` takes, counting shared parts each time.

    Stops soon after ``cap``: a list holding one big string a million times is small in memory
    but enormous once printed or joined, and that is what the caps must see. The walk itself is
    paid for from the budget, one unit per item visited.
    """
    total, visits, stack = 0, 0, [value]
    while stack and total <= cap:
        visits += 1
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, dict):
            total += 2 + 2 * len(item)
            if total <= cap:
                stack.extend(item.keys())
                stack.extend(item.values())
        elif isinstance(item, list | tuple | KeysView | ValuesView | ItemsView):
            total += 2 + len(item)
            if total <= cap:
                stack.extend(item)
        else:
            total += 24
    budget().spend(visits)
    return total


def _total_size(values: Iterable[object], cap: int) -> int:
    total = 0
    for value in values:
        total += _size(value, cap - total)
        if total > cap:
            break
    return total


def check_size(size: int, limit: int, what: str) -> None:
    """Refuse a result of ``size`` characters (or items) over ``limit``."""
    if size > limit:
        raise TemplateError(f"{what} would be too large (limit {limit:,})")


def _spend_chars(count: int) -> None:
    budget().spend(count // _CHARS_PER_UNIT + 1)


def _limit(size: int, limit: int, what: str) -> None:
    """Refuse a result of ``size`` characters (or items) over ``limit``; pay for building it."""
    check_size(size, limit, what)
    _spend_chars(size)


def _charge_input(value: object, slow: bool = False) -> None:
    """Pay for a value a filter, method or comparison is about to walk; refuse huge ones.

    ``slow``: the work is Python code per character or per item (a regex, a callback).
    """
    if isinstance(value, str) and slow:
        budget().spend(len(value))
    elif isinstance(value, str):
        _spend_chars(len(value))
    elif isinstance(value, dict | list | tuple | KeysView | ValuesView | ItemsView):
        check_size(_size(value), MAX_SCAN, "the value passed to a filter or comparison")
        if slow:
            budget().spend(_SLOW_ITEM_COST * len(value))
    else:
        budget().spend(1)


def type_name(value: object) -> str:
    """The name of ``value``'s type as users know it (``range``, not the sandbox's class)."""
    if isinstance(value, SandboxRange):
        return "range"
    if isinstance(value, _Namespace):
        return "namespace"
    return type(value).__name__


# --- guarded operators, methods and filters ----------------------------------------------------

_SEQUENCES: Final = (str, list, tuple)
_PRINTF: Final = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d*)(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)
# encode/to_bytes make bytes (unbounded, not JSON); translate can map each char to a long string.
# A raw format/format_map only arrives here if Jinja failed to wrap it: refuse it, not trust it.
_DENIED_METHODS: Final = frozenset({"encode", "translate", "to_bytes", "format", "format_map"})
_CONSTANT_TIME_METHODS: Final = frozenset({"get", "keys", "values", "items", "bit_length"})


def _guard_binop(op: str, left: Any, right: Any) -> None:
    if op == "%":
        if isinstance(left, str):
            _guard_printf(left, right)
    elif isinstance(left, int) and isinstance(right, int):
        if op == "**" and right > 0 and abs(left) > 1:
            bits = right * left.bit_length()
        else:
            bits = left.bit_length() + right.bit_length() if op == "*" else 0
        if bits > MAX_INT_BITS:
            raise TemplateError(f"the number would be too large (over {MAX_INT_BITS:,} bits)")
    elif op == "+" and isinstance(left, _SEQUENCES) and isinstance(right, _SEQUENCES):
        _limit_sequence(len(left) + len(right), left, right)
    elif op == "*" and isinstance(left, _SEQUENCES) and isinstance(right, int):
        _limit_sequence(len(left) * max(right, 0), left, right)
    elif op == "*" and isinstance(right, _SEQUENCES) and isinstance(left, int):
        _limit_sequence(len(right) * max(left, 0), left, right)


def _limit_sequence(length: int, left: object, right: object) -> None:
    if isinstance(left, str) or isinstance(right, str):
        _limit(length, MAX_STRING, "the string")
    else:
        _limit(length, MAX_ITEMS, "the list")


def _guard_printf(fmt: str, args: Any) -> None:
    specs = _PRINTF.findall(fmt)
    if any("*" in (width, precision) for width, precision, _ in specs):
        raise TemplateError("'*' widths are not supported in % formatting")
    padding = sum(int(width or 0) + int(precision or 0) for width, precision, _ in specs)
    if isinstance(args, tuple):
        payload = _total_size(args, MAX_STRING)
    else:
        payload = len(specs) * _size(args, MAX_STRING)
    _limit(len(fmt) + padding + payload, MAX_STRING, "the formatted string")


def _guard_replace(text: str, old: object, new: object, count: object) -> None:
    if isinstance(old, str) and isinstance(new, str):
        hits = text.count(old)
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        _limit(len(text) + hits * len(new), MAX_STRING, "the replaced string")


def _guard_str_method(
    name: str, text: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    first = args[0] if args else kwargs.get("tabsize")
    if name in ("center", "ljust", "rjust", "zfill") and isinstance(first, int):
        _limit(first, MAX_STRING, "the padded string")
    elif name == "expandtabs":
        tab = first if isinstance(first, int) else 8
        _limit(len(text) + text.count("\t") * tab, MAX_STRING, "the expanded string")
    elif name == "replace" and len(args) >= 2:
        _guard_replace(text, args[0], args[1], args[2] if len(args) > 2 else -1)
    elif name == "join" and args:
        items = list(args[0])
        _limit(_total_size(items, MAX_STRING) + len(text) * len(items), MAX_STRING, "the string")
        return (items, *args[1:])
    return args


def _center(value: Any, width: int = 80) -> str:
    _limit(width if isinstance(width, int) else 0, MAX_STRING, "the centered string")
    return filters.do_center(value, width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    _limit(len(text) + (text.count("\n") + 1) * max(step, 0), MAX_STRING, "the indented text")
    return filters.do_indent(text, width, first, blank)


@pass_environment
def _wordwrap(env: Environment, s: Any, width: int = 79, *args: Any, **kwargs: Any) -> str:
    text = str(s)
    wrap = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or env.newline_sequence
    lines = len(text) // max(width, 1) + 1 if isinstance(width, int) else 1
    _limit(len(text) + lines * len(str(wrap)), MAX_STRING, "the wrapped text")
    if isinstance(width, int) and kwargs.get("break_long_words", args[0] if args else True):
        _spend_chars(_long_word_copies(text, max(width, 1)))
    return filters.do_wordwrap(env, text, width, *args, **kwargs)


def _long_word_copies(text: str, width: int) -> int:
    """Characters textwrap copies to break ``text``'s long words: it re-slices the rest of a word
    for every piece it cuts off, so a word of ``n`` characters costs about ``n * n / 2 / width``.
    """
    words = text.split()
    budget().spend(len(words) // _CHARS_PER_UNIT + 1)
    longest = max(map(len, words), default=0)
    if longest <= width:
        return 0
    return sum(len(word) * len(word) for word in words if len(word) > width) // (2 * width)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _guard_printf(str(value), kwargs or args)
    return filters.do_format(value, *args, **kwargs)


def _batch(value: Any, linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _limit(linecount if isinstance(linecount, int) else 0, MAX_ITEMS, "the batch")
    return filters.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    budget().iterate(slices if isinstance(slices, int) else 0)
    return filters.sync_do_slice(value, slices, fill_with)


@pass_eval_context
def _replace(ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    _guard_replace(str(s), str(old), str(new), count)
    return filters.do_replace(ctx, s, old, new, count)


@pass_eval_context
def _join(ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    _limit(_total_size(items, MAX_STRING) + len(str(d)) * len(items), MAX_STRING, "the string")
    return filters.sync_do_join(ctx, items, d, attribute)


@pass_environment
def _sum(env: Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0) -> Any:
    if not isinstance(start, int | float):
        raise TemplateError("sum adds numbers: its start value must be a number")
    return filters.sync_do_sum(env, iterable, attribute, start)


_FILTER_OVERRIDES: Final[dict[str, Callable[..., Any]]] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "format": _format,
    "batch": _batch,
    "slice": _slice,
    "replace": _replace,
    "join": _join,
    "sum": _sum,
}
_DROPPED_FILTERS: Final = frozenset({"random"})  # a retried step must render the same text


# Filters that neither walk nor print their input; charging them by its size would make
# templates that only ask for the length of a large step output fail for no reason.
_CHEAP_FILTERS: Final = frozenset({"attr", "count", "d", "default", "first", "last", "length"})
# Filters that run Python code (a callback, a regex, textwrap) per item or per character.
_SLOW_FILTERS: Final = frozenset(
    {"map", "select", "reject", "selectattr", "rejectattr", "groupby", "unique", "sort"}
    | {"dictsort", "min", "max", "sum", "pprint", "urlize", "wordwrap", "striptags", "wordcount"}
    | {"title", "truncate", "urlencode", "xmlattr"}
)
_SLOW_ITEM_COST: Final = 4


# Tests that compare their arguments, which Python may walk entirely.
_COMPARING_TESTS: Final = frozenset(
    {"in", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<="}
    | {"gt", "greaterthan", ">", "ge", ">="}
)


def _comparing(test: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(test)
    def compared(*args: Any, **kwargs: Any) -> Any:
        for arg in args:
            _charge_input(arg)
        return test(*args, **kwargs)

    return compared


def _charged(func: Callable[..., Any], slow: bool) -> Callable[..., Any]:
    """Wrap a filter so its input is size-checked and paid for (``wraps`` keeps pass_* flags)."""
    position = 0 if getattr(func, "jinja_pass_arg", None) is None else 1

    @functools.wraps(func)
    def charged(*args: Any, **kwargs: Any) -> Any:
        if len(args) > position:
            _charge_input(args[position], slow)
        return func(*args, **kwargs)

    return charged


# --- sandbox -----------------------------------------------------------------------------------


class SandboxRange:
    """``range`` for templates: iterating it draws from the call's loop budget."""

    __slots__ = ("_range",)

    def __init__(self, inner: range) -> None:
        self._range = inner

    def __len__(self) -> int:
        return len(self._range)

    def __contains__(self, item: object) -> bool:
        return item in self._range

    def __getitem__(self, index: int | slice) -> int | SandboxRange:
        item = self._range[index]
        return SandboxRange(item) if isinstance(item, range) else item

    def __iter__(self) -> Iterator[int]:
        return _counted(self._range)

    def __reversed__(self) -> Iterator[int]:
        return _counted(reversed(self._range))

    def __repr__(self) -> str:
        return repr(self._range)


def _make_range(*args: int) -> SandboxRange:
    return SandboxRange(range(*args))


def _counted(items: Iterable[Any]) -> Iterator[Any]:
    current = budget()
    for item in items:
        current.iterate()
        yield item


class _Namespace(Namespace):
    """``namespace()`` whose text form stays small however much it holds."""

    def __repr__(self) -> str:
        return "<namespace>"


class _Formatter(SandboxedFormatter):
    """``str.format`` whose fields cannot be huge or widen the result past ``MAX_STRING``."""

    def __init__(self, env: Environment, used: int) -> None:
        super().__init__(env)
        self._used = used

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        obj, first = super().get_field(field_name, args, kwargs)
        if not isinstance(obj, str):
            _limit(_size(obj, MAX_STRING), MAX_STRING, "the formatted value")
        return obj, first

    def format_field(self, value: Any, format_spec: str) -> Any:
        widest = max((int(number) for number in re.findall(r"\d+", format_spec)), default=0)
        check_size(self._used + widest, MAX_STRING, "the formatted string")
        text = super().format_field(value, format_spec)
        self._used += len(text)
        _limit(len(text), MAX_STRING, "the formatted string")
        check_size(self._used, MAX_STRING, "the formatted string")
        return text


def _finalize(value: Any) -> Any:
    """Check each ``{{ … }}`` value before Jinja turns it into text."""
    if isinstance(value, str | Undefined):  # str() of a StrictUndefined raises the real error
        return value
    if not isinstance(value, int | float | list | tuple | dict | types.NoneType):
        raise TemplateError(
            f"cannot print a {type_name(value)}; convert it first, e.g. with |list or |tojson"
        )
    _limit(_size(value, MAX_STRING), MAX_STRING, "the printed value")
    return value


class Sandbox(ImmutableSandboxedEnvironment):
    """The Jinja2 environment for workflow templates; compile only trees passed through harden()."""

    intercepted_binops: frozenset[str] = frozenset({"*", "**", "+", "%"})

    def __init__(self) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            finalize=_finalize,
        )
        self.globals.clear()  # drops lipsum(n), which can generate any amount of text
        self.globals.update(
            range=_make_range, dict=dict, namespace=_Namespace, cycler=Cycler, joiner=Joiner
        )
        self.filters = {
            name: func
            if name in _CHEAP_FILTERS
            else _charged(_FILTER_OVERRIDES.get(name, func), name in _SLOW_FILTERS)
            for name, func in filters.FILTERS.items()
            if name not in _DROPPED_FILTERS
        }
        for name in _COMPARING_TESTS & set(self.tests):
            # Jinja's stubs type these as ``function``, which mypy does not treat as callable.
            self.tests[name] = _comparing(cast("Callable[..., Any]", self.tests[name]))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        budget().tick()
        _guard_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget().tick()  # calls, attributes, operators: a long render stops between them
        # Python-level methods count too: Markup (from |safe or |e) wraps str.center and friends.
        bound = isinstance(obj, types.BuiltinMethodType | types.MethodType)
        owner = getattr(obj, "__self__", None) if bound else None
        if isinstance(owner, str | int | float | list | tuple | dict):
            if obj.__name__ in _DENIED_METHODS:
                raise TemplateError(f"{type(owner).__name__}.{obj.__name__}() is not allowed")
            if obj.__name__ not in _CONSTANT_TIME_METHODS:
                _spend_chars(len(owner) if isinstance(owner, str | list | tuple | dict) else 1)
            if isinstance(owner, str):
                args = _guard_str_method(obj.__name__, owner, args, kwargs)
        return super().call(context, obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        budget().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget().tick()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """Route ``str.format``/``format_map`` through the size-checking formatter."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        owner = getattr(value, "__self__", None)
        if value.__name__ not in ("format", "format_map") or not isinstance(owner, str):
            return None
        as_map = value.__name__ == "format_map"

        def formatted(*args: Any, **kwargs: Any) -> str:
            if as_map and (kwargs or len(args) != 1):
                raise TypeError("format_map() takes exactly one argument")
            positional, named = ((), args[0]) if as_map else (args, kwargs)
            return str(_Formatter(self, len(owner)).vformat(owner, positional, named))

        return formatted

    # Called by code the hardener inserts (as environment attributes, out of templates' reach).
    def iterate(self, iterable: Any) -> Any:
        return iterable if isinstance(iterable, SandboxRange) else _counted(iterable)

    def concat(self, *parts: Any) -> str:
        _limit(_total_size(parts, MAX_STRING), MAX_STRING, "the joined string")
        return "".join([part if isinstance(part, str) else str(part) for part in parts])

    def sliced(self, part: Any) -> Any:
        """Pay for a slice (``x[a:b]``), which copies; Jinja compiles it to plain Python."""
        if isinstance(part, str | list | tuple):
            _spend_chars(len(part))
        return part

    def scan(self, operand: Any) -> Any:
        """Pay for an operand of ``==``, ``<`` …, which Python may walk entirely."""
        _charge_input(operand)
        return operand

    def member(self, container: Any) -> Any:
        """Pay for the right side of ``in``: a dict is hashed, a list or string is scanned."""
        if isinstance(container, str):
            _spend_chars(len(container))
        elif isinstance(container, list | tuple):
            budget().spend(len(container) + 1)
        else:
            budget().spend(1)
        return container


_FORBIDDEN_TAGS: Final[dict[type[nodes.Node], str]] = {
    nodes.Macro: "macro",
    nodes.CallBlock: "call",
    nodes.FilterBlock: "filter",
    nodes.AssignBlock: "set (block form)",
    nodes.Block: "block",
    nodes.Extends: "extends",
    nodes.Include: "include",
    nodes.Import: "import",
    nodes.FromImport: "from … import",
}


def _helper(name: str, *args: nodes.Node) -> nodes.Call:
    lineno = args[0].lineno
    function = nodes.EnvironmentAttribute(name, lineno=lineno)
    return nodes.Call(function, list(args), [], None, None, lineno=lineno)


def _scanned(expr: nodes.Expr, helper: str = "scan") -> nodes.Expr:
    # Literals are as small as the source; anything else may be a huge list compared in a loop.
    return expr if isinstance(expr, nodes.Const) else _helper(helper, expr)


class _Hardener(NodeTransformer):
    """Rejects buffering or recursive tags; routes loops, ``~``, slices and comparisons through
    the budget.

    Method names follow Jinja's node class names, which is how the visitor dispatches.
    """

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        tag = _FORBIDDEN_TAGS.get(type(node))
        if tag is not None:
            raise TemplateError(f"line {node.lineno}: {{% {tag} %}} is not supported here")
        return super().visit(node, *args, **kwargs)

    def visit_For(self, node: nodes.For) -> nodes.For:  # noqa: N802
        if node.recursive:
            raise TemplateError(f"line {node.lineno}: recursive loops are not supported")
        self.generic_visit(node)
        node.iter = _helper("iterate", node.iter)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Call:  # noqa: N802
        self.generic_visit(node)
        return _helper("concat", *node.nodes)

    def visit_Getitem(self, node: nodes.Getitem) -> nodes.Expr:  # noqa: N802
        self.generic_visit(node)
        return _helper("sliced", node) if isinstance(node.arg, nodes.Slice) else node

    def visit_Compare(self, node: nodes.Compare) -> nodes.Compare:  # noqa: N802
        self.generic_visit(node)
        node.expr = _scanned(node.expr)
        for operand in node.ops:
            membership = operand.op in ("in", "notin")
            operand.expr = _scanned(operand.expr, "member" if membership else "scan")
        return node


def harden(tree: nodes.Template, env: Sandbox) -> nodes.Template:
    """Reject forbidden tags in ``tree`` and route its costly operations through the budget."""
    hardened: nodes.Template = _Hardener().visit(tree)
    hardened.set_environment(env)
    return hardened
