"""TemplateEngine: native values, text, errors, and the sandbox's escape and size limits."""

from __future__ import annotations

import copy
import json
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from treadle.engine.json import JSON, JSONObject
from treadle.engine.template import MAX_SOURCE_CHARS, TemplateEngine, TemplateError

CONTEXT: JSONObject = {
    "input": {
        "n": 3,
        "name": "Ada",
        "tags": ["a", "b"],
        "user": {"email": "ada@example.com"},
        "rows": list(range(1000)),
        "at": "2030-01-01T00:00:00Z",
    },
    "steps": {
        "fetch": {"output": {"status": 200, "body": {"title": "Hi", "items": [1, 2, 3]}}},
        "summarize": {"output": {"text": "x" * 150}},
    },
    "run": {"id": "run-1"},
    "workflow": {"id": "wf-1"},
}
CANARY = "canary-7f3a9e1d"


@pytest.fixture(scope="module")
def engine() -> TemplateEngine:
    return TemplateEngine()


def _is_plain_json(value: object) -> bool:
    if isinstance(value, dict):
        return all(type(k) is str and _is_plain_json(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_is_plain_json(item) for item in value)
    return value is None or type(value) in (str, int, float, bool)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ input.n }}", 3),
        ("  {{ input.tags }}\n", ["a", "b"]),
        ("{{- input.n -}}", 3),
        ("{{ steps.fetch.output.body }}", {"title": "Hi", "items": [1, 2, 3]}),
        ("{{ input.n > 2 }}", True),
        ("{{ none }}", None),
        ("{{ input.n / 2 }}", 1.5),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ {'a': input.n, 1: 'one'} }}", {"a": 3, "1": "one"}),
        ("{{ range(3) }}", [0, 1, 2]),
        ("{{ input.tags | map('upper') }}", ["A", "B"]),
        ("{{ input.user.items() | list }}", [["email", "ada@example.com"]]),
        ("{{ steps.summarize.output.text | length }}", 150),
        ("{{ '%05d' % input.n }}", "00003"),
        ("{{ '{}-{}'.format(input.n, input.name) }}", "3-Ada"),
        ("{{ 'x'|safe }}", "x"),
    ],
)
def test_single_expression_yields_native_value(
    engine: TemplateEngine, source: str, expected: JSON
) -> None:
    result = engine.render(source, CONTEXT)
    assert result == expected
    assert _is_plain_json(result)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("n={{ input.n * 2 }}", "n=6"),
        ("{{ run.id }}/{{ workflow.id }}", "run-1/wf-1"),
        ("{% for t in input.tags %}{{ t }};{% endfor %}", "a;b;"),
        ("{% if input.n > 2 %}big{% else %}small{% endif %}", "big"),
        ("Hello {{ input.name }}!\n", "Hello Ada!\n"),
        ("{{ input.tags | join(',') }} and {{ input.n }}", "a,b and 3"),
        (
            "{% set ns = namespace(total=0) %}{% for r in input.tags %}"
            "{% set ns.total = ns.total + 1 %}{% endfor %}{{ ns.total }} tags",
            "2 tags",
        ),
        ("{{ input.name ~ '!' }} {{ input.name|upper }}", "Ada! ADA"),
    ],
)
def test_other_templates_render_to_text(engine: TemplateEngine, source: str, expected: str) -> None:
    assert engine.render(source, CONTEXT) == expected


@pytest.mark.parametrize(
    "value", ["plain text", "{ not: a template }", "{# note #}", "", 1, 1.5, True, None]
)
def test_values_without_templates_come_back_unchanged(engine: TemplateEngine, value: JSON) -> None:
    assert engine.render(value, CONTEXT) == value


@given(st.text().filter(lambda text: "{{" not in text and "{%" not in text))
def test_text_without_template_syntax_is_unchanged(text: str) -> None:
    assert TemplateEngine().render(text, {}) == text


def test_nested_values_render_keys_and_values(engine: TemplateEngine) -> None:
    value: JSON = {
        "title": "{{ steps.fetch.output.body.title }}",
        "list": ["{{ input.n }}", "x{{ input.n }}", 5, None, {"b": False}],
        "{{ input.name }}": {"deep": "{{ input.user.email }}"},
        "{{ input.n }}": "number key",
    }
    assert engine.render(value, CONTEXT) == {
        "title": "Hi",
        "list": [3, "x3", 5, None, {"b": False}],
        "Ada": {"deep": "ada@example.com"},
        "3": "number key",
    }


def test_keys_that_collide_after_rendering_are_an_error(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError, match="repeats"):
        engine.render({"Ada": 1, "{{ input.name }}": 2}, CONTEXT)


@pytest.mark.parametrize(
    "source",
    ["{{ nope }}", "{{ input.nope }}", "a {{ input.nope }} b", "{{ steps.missing.output }}"],
)
def test_missing_variables_are_errors(engine: TemplateEngine, source: str) -> None:
    with pytest.raises(TemplateError, match="undefined") as caught:
        engine.render(source, CONTEXT)
    assert source[:20] in caught.value.message


def test_errors_name_the_path_inside_the_value(engine: TemplateEngine) -> None:
    with pytest.raises(TemplateError, match=r"at body\.items\[1\]: undefined"):
        engine.render({"body": {"items": ["ok", "{{ input.nope }}"]}}, CONTEXT)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("steps.summarize.output.text | length > 100", True),
        ("input.n * 2", 6),
        ("input.name == 'Ada' and input.n > 1", True),
        ("input.tags", ["a", "b"]),
        ("input.n in [1, 2]", False),
    ],
)
def test_evaluate(engine: TemplateEngine, expression: str, expected: JSON) -> None:
    assert engine.evaluate(expression, CONTEXT) == expected


@pytest.mark.parametrize("expression", ["input.", "input.n >", "{{ input.n }}", "1 2", "", "a }}"])
def test_bad_expressions_fail_the_check(engine: TemplateEngine, expression: str) -> None:
    with pytest.raises(TemplateError, match="expression"):
        engine.check_expression(expression)
    with pytest.raises(TemplateError):
        engine.evaluate(expression, CONTEXT)


def test_check_template_accepts_valid_and_reports_invalid(engine: TemplateEngine) -> None:
    engine.check_template({"a": ["{{ x.y }}", "{% for i in x %}{{ i }}{% endfor %}"], "b": 1})
    with pytest.raises(TemplateError, match=r"at a\[1\]: syntax error on line 1"):
        engine.check_template({"a": ["fine", "{{ x }"]})
    with pytest.raises(TemplateError, match="syntax error"):
        engine.check_template({"{% if %}": "key"})


@pytest.mark.parametrize(
    "source",
    [
        "{% macro m() %}x{% endmacro %}{{ m() }}",
        "{% set x %}buffered{% endset %}",
        "{% filter upper %}x{% endfilter %}",
        "{% include 'other' %}",
        "{% import 'os' as os %}",
        "{% extends 'base' %}",
        "{% for x in input.tags recursive %}{{ loop(x) }}{% endfor %}",
    ],
)
def test_buffering_and_recursive_tags_are_rejected(engine: TemplateEngine, source: str) -> None:
    with pytest.raises(TemplateError, match="not supported"):
        engine.check_template(source)


# Escape attempts and resource exhaustion, by the reason each must be refused for. A refusal for
# another reason (say the wall-clock backstop instead of the work budget) fails the test.
REASONS: dict[str, str] = {
    "unsafe": r"not allowed: access to attribute '\w+' of '\w+' object is unsafe",
    "undefined": r"undefined value: '\w+' is undefined",
    "denied-method": r"\w+\.\w+\(\) is not allowed",
    "not-json": r"which is not a JSON value",
    "big-number": r"the number would be too large",
    "too-large": r"would be too large \(limit [\d,]+\)",
    "star-width": r"'\*' widths are not supported",
    "iterations": r"too many loop iterations",
    "work": r"the template does too much work",
    "not-finite": r"is not a finite number",
    "nesting": r"nested too deeply",
    "too-long": r"too long \([\d,]+ characters",
}
ATTACKS_BY_REASON: dict[str, list[str]] = {
    "unsafe": [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ().__class__.__bases__[0].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.environ }}",
        "{{ joiner.__init__.__globals__['os'].environ['TREADLE_CANARY'] }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ range.__globals__ }}",
        "{{ dict.__subclasses__() }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{{ '{0.__class__.__mro__}'.format(input) }}",
        "{{ '{a.__class__}'.format_map({'a': 1}) }}",
        "{{ input|attr('__class__') }}",
        "{{ ('{0.__init__.__globals__[os].environ[TREADLE_CANARY]}'|attr('format'))(cycler) }}",
        "{{ ('{0.__class__}'|attr('format'))(1) }}",
        "{{ input['__class__'] }}",
        "{{ input.tags.append(1) }}",
        "{{ input.tags.pop() }}",
        "{{ input.user.update({'email': 'evil'}) }}",
        "{{ input.user.clear() }}",
    ],
    "undefined": [
        "{{ lipsum.__globals__ }}",
        "{{ lipsum.__globals__['os'].environ }}",
        "{{ request }}",
        "{{ config }}",
        "{{ config.items() }}",
    ],
    "denied-method": ["{{ 'x'.encode() }}", "{{ (1).to_bytes(10**9, 'big') }}"],
    "not-json": [
        "{{ range }}",
        "{{ dict }}",
        "{{ cycler }}",
        "{{ input.name.upper }}",
        "{{ (-8) ** 0.5 }}",
    ],
    "big-number": ["{{ 9**(9**9) }}", "{{ 2**100000 }}"],
    "too-large": [
        "{{ 'a'*10**9 }}",
        "{{ 'a'*1000000*1000 }}",
        "{{ ['a']*10**9 }}",
        "{{ '%1000000000s' % 1 }}",
        "{{ '%1000000000s'|format(1) }}",
        "{{ '{:1000000000}'.format(1) }}",
        "{{ '{0:{1}}'.format(1, 10**9) }}",
        "{{ 'a'|center(10**9) }}",
        "{{ 'a'.ljust(10**9) }}",
        "{{ ('x'|safe).rjust(10**9) }}",
        "{{ 'a\tb'.expandtabs(tabsize=10**9) }}",
        "{{ input.name|replace('', 'x'*1000000) }}",
        "{{ input.name|indent(10**9, true) }}",
        "{{ ''.join(['a'*1000000]*1000) }}",
        "{% set x = ['a'*1000000]*1000 %}{{ x|join }}",
        "{% set x = ['a'*1000000]*1000 %}{{ x|tojson }}",
        "{% set x = ['a'*1000000]*1000 %}{{ x }}",
        "{% set x = 'a'*1000000 %}{{ x ~ x ~ x }}",
        "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s }}",
        "{{ input.tags | batch(10**9) | list }}",
        "{% for i in range(2000) %}{{ 'x' * 1000 }}{% endfor %}",
    ],
    "star-width": ["{{ '%*d' % (10**9, 1) }}"],
    "iterations": [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% set r = range(1000) %}{% for a in r %}{% for b in r %}{% endfor %}{% endfor %}",
        "{% for a in input.rows %}{% for b in input.rows %}{% endfor %}{% endfor %}",
        "{% for i in range(10**9) %}{% endfor %}",
        "{{ range(10**9) | list }}",
        "{{ range(10**9) }}",
        "{{ input.tags | slice(10**9) | list }}",
    ],
    "work": [
        "{% for i in range(100000) %}{{ 'x' in steps.summarize.output.text * 1000 }}{% endfor %}",
        "{% for i in range(100000) %}{% set x = input.rows == input.rows|list %}{% endfor %}",
        "{% for i in range(100000) %}{% set x = 999 is in input.rows %}{% endfor %}",
        "{% for i in range(100000) %}{% set x = input.rows[::-1] %}{% endfor %}",
        "{% for i in range(100000) %}{% set x = input.rows|map('abs')|list %}{% endfor %}",
        "{% for i in range(100000) %}{% set x = input.rows|sort %}{% endfor %}",
    ],
    "not-finite": ["{{ 1e308 * 10 }}"],
    "nesting": [
        "{{ " + "[" * 4000 + "]" * 4000 + " }}",
        "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
    ],
    "too-long": ["{{ input.n }}" + " " * MAX_SOURCE_CHARS],
}
ATTACKS = [source for sources in ATTACKS_BY_REASON.values() for source in sources]
# CPU seconds one refusal may take. The slowest attack needs about 0.9 s on an idle 2-core
# machine; the sandbox's wall-clock backstop is 5 s, so a budget that stopped firing (and left
# the backstop to stop the template) fails this bound as well as the reason. CPU time, not
# wall time, so a loaded machine does not make the bound flaky.
QUICK_CPU_SECONDS = 3.0


@pytest.mark.parametrize(
    ("source", "reason"),
    [(source, reason) for reason, sources in ATTACKS_BY_REASON.items() for source in sources],
)
def test_attacks_are_refused_quickly_for_their_reason(
    engine: TemplateEngine, source: str, reason: str
) -> None:
    before = copy.deepcopy(CONTEXT)
    started = time.process_time()
    with pytest.raises(TemplateError) as caught:
        engine.render(source, CONTEXT)
    spent = time.process_time() - started
    assert re.search(REASONS[reason], caught.value.message), caught.value.message
    assert spent < QUICK_CPU_SECONDS, f"refused after {spent:.2f} s of CPU"
    assert before == CONTEXT  # nothing was mutated


@pytest.mark.parametrize(
    "expression",
    ["''.__class__", "cycler.__init__.__globals__", "input.tags.append(1)", "'a' * 10**9"],
)
def test_attacks_through_evaluate_are_refused(engine: TemplateEngine, expression: str) -> None:
    with pytest.raises(TemplateError):
        engine.evaluate(expression, CONTEXT)


def test_nothing_reveals_the_environment(
    engine: TemplateEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TREADLE_CANARY", CANARY)
    seen: list[str] = []
    for source in [*ATTACKS, "{{ 9**9**9 }}", "{{ input }}", "{{ steps | tojson }}"]:
        try:
            result = engine.render(source, CONTEXT)
        except TemplateError as exc:
            seen.append(exc.message)
        else:
            assert _is_plain_json(result)
            seen.append(json.dumps(result))
    assert not [text for text in seen if CANARY in text]


def test_budgets_are_per_call(engine: TemplateEngine) -> None:
    source = "{% for i in range(90000) %}{% endfor %}done"
    assert engine.render(source, CONTEXT) == "done"
    assert engine.render(source, CONTEXT) == "done"


def test_output_limits(engine: TemplateEngine) -> None:
    assert (
        len(str(engine.render("{% for i in range(500) %}{{ 'x' * 1000 }}{% endfor %}", {})))
        == 500_000
    )
    five_megabytes: JSON = {str(key): "{{ 'x' * 1000000 }}" for key in range(5)}
    with pytest.raises(TemplateError, match="add up to"):
        engine.render(five_megabytes, {})


def test_loops_and_filters_still_work_within_limits(engine: TemplateEngine) -> None:
    source = "{{ input.rows | select('odd') | map('string') | join(',') | length }}"
    assert engine.render(source, CONTEXT) == len(",".join(str(n) for n in range(1, 1000, 2)))
    assert engine.render("{{ input.rows | sum }}", CONTEXT) == sum(range(1000))
    looped = "{% for r in input.rows %}{{ loop.index if loop.last }}{% endfor %}"
    assert engine.render(looped, CONTEXT) == "1000"


def test_constant_time_lookups_in_a_loop_stay_cheap(engine: TemplateEngine) -> None:
    context: JSONObject = {
        "input": {"ids": list(range(5000)), "names": {str(n): f"n{n}" for n in range(5000)}}
    }
    source = (
        "{% set ns = namespace(hits=0) %}{% for i in input.ids %}"
        "{% if i|string in input.names and input.names.get(i|string) %}"
        "{% set ns.hits = ns.hits + 1 %}{% endif %}{% endfor %}{{ ns.hits }}"
    )
    assert engine.render(source, context) == "5000"
