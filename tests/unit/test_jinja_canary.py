"""Canary: fails when Jinja2 gains (or loses) filters, tests, globals or node types.

It also fails when the sandbox's own environment offers a name outside that review: a filter,
test or global added to ``Sandbox`` directly reaches templates as surely as one from Jinja2.

The sandbox (``treadle.engine.sandbox``) was reviewed against exactly the names below: which
filters are charged by input size, which tests compare (and so walk) their arguments, which
globals are replaced, and which tags are rejected when compiling. A Jinja2 upgrade that adds
any of these reaches templates without that review, so this test stops it. To pass again,
review the new names in the sandbox (charge, wrap, drop or reject them), then add them here.
"""

from __future__ import annotations

import inspect

import jinja2
from jinja2 import defaults, filters, nodes, tests

from treadle.engine.sandbox import Sandbox

REVIEWED_FILTERS = frozenset(
    {"abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e"}
    | {"escape", "filesizeformat", "first", "float", "forceescape", "format", "groupby"}
    | {"indent", "int", "items", "join", "last", "length", "list", "lower", "map", "max"}
    | {"min", "pprint", "random", "reject", "rejectattr", "replace", "reverse", "round"}
    | {"safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum", "title"}
    | {"tojson", "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount"}
    | {"wordwrap", "xmlattr"}
)
REVIEWED_TESTS = frozenset(
    {"!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq"}
    | {"equalto", "escaped", "even", "false", "filter", "float", "ge", "greaterthan", "gt", "in"}
    | {"integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none"}
    | {"number", "odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper"}
)
REVIEWED_GLOBALS = frozenset({"cycler", "dict", "joiner", "lipsum", "namespace", "range"})
# What the sandbox takes away from Jinja2's defaults: random (a retried step must render the same
# text) and lipsum (any amount of text); the other globals it keeps are its own replacements.
SANDBOX_DROPS_FILTERS = frozenset({"random"})
SANDBOX_GLOBALS = frozenset({"cycler", "dict", "joiner", "namespace", "range"})
REVIEWED_NODES = frozenset(
    {"Add", "And", "Assign", "AssignBlock", "BinExpr", "Block", "Break", "Call", "CallBlock"}
    | {"Compare", "Concat", "CondExpr", "Const", "ContextReference", "Continue"}
    | {"DerivedContextReference", "Dict", "Div", "EnvironmentAttribute", "EvalContextModifier"}
    | {"Expr", "ExprStmt", "Extends", "ExtensionAttribute", "Filter", "FilterBlock", "FloorDiv"}
    | {"For", "FromImport", "Getattr", "Getitem", "Helper", "If", "Import", "ImportedName"}
    | {"Include", "InternalName", "Keyword", "List", "Literal", "Macro", "MarkSafe"}
    | {"MarkSafeIfAutoescape", "Mod", "Mul", "NSRef", "Name", "Neg", "Node", "Not", "Operand"}
    | {"Or", "Output", "OverlayScope", "Pair", "Pos", "Pow", "Scope", "ScopedEvalContextModifier"}
    | {"Slice", "Stmt", "Sub", "Template", "TemplateData", "Test", "Tuple", "UnaryExpr", "With"}
    | {"_FilterTestCommon"}
)
HINT = f"Jinja2 {jinja2.__version__} differs from the reviewed set: review the sandbox first"


def _node_classes() -> set[str]:
    return {
        name
        for name, value in vars(nodes).items()
        if inspect.isclass(value) and issubclass(value, nodes.Node)
    }


def test_filters_are_the_reviewed_ones() -> None:
    assert set(defaults.DEFAULT_FILTERS) == REVIEWED_FILTERS, HINT
    assert set(filters.FILTERS) == REVIEWED_FILTERS, HINT


def test_tests_are_the_reviewed_ones() -> None:
    assert set(defaults.DEFAULT_TESTS) == REVIEWED_TESTS, HINT
    assert set(tests.TESTS) == REVIEWED_TESTS, HINT


def test_globals_are_the_reviewed_ones() -> None:
    assert set(defaults.DEFAULT_NAMESPACE) == REVIEWED_GLOBALS, HINT


def test_node_types_are_the_reviewed_ones() -> None:
    assert _node_classes() == REVIEWED_NODES, HINT


def test_the_sandbox_offers_only_reviewed_names() -> None:
    env = Sandbox()
    assert set(env.filters) == REVIEWED_FILTERS - SANDBOX_DROPS_FILTERS, "unreviewed filter"
    assert set(env.tests) == REVIEWED_TESTS, "unreviewed test"
    assert set(env.globals) == SANDBOX_GLOBALS, "unreviewed global"
