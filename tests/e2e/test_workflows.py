"""Workflow CRUD and definition validation over REST and GraphQL."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from tests.e2e.conftest import SIMPLE_DAG, Account
from tests.support.client import Api, ApiError


def test_create_get_update_delete(api: Api, alice: Account) -> None:
    created = api.create_workflow(
        alice.token, name="Flow", description="first", definition=SIMPLE_DAG
    )
    assert created["version"] == 1
    assert created["name"] == "Flow"
    assert [n["id"] for n in created["definition"]["nodes"]] == [
        "shape",
        "check",
        "big",
        "small",
        "join",
    ]
    assert api.get_workflow(alice.token, created["id"]) == created

    renamed = api.update_workflow(alice.token, created["id"], name="Renamed")
    assert renamed["version"] == 2
    assert renamed["description"] == "first"
    assert renamed["definition"] == created["definition"]

    changed = copy.deepcopy(SIMPLE_DAG)
    changed["nodes"][0]["config"]["output"] = {"n": 1}
    updated = api.update_workflow(alice.token, created["id"], definition=changed)
    assert updated["version"] == 3
    assert updated["definition"]["nodes"][0]["config"]["output"] == {"n": 1}

    api.delete_workflow(alice.token, created["id"])
    with pytest.raises(ApiError) as err:
        api.get_workflow(alice.token, created["id"])
    assert err.value.code == "NOT_FOUND"
    for call in (
        lambda: api.update_workflow(alice.token, created["id"], name="x"),
        lambda: api.delete_workflow(alice.token, created["id"]),
        lambda: api.execute(alice.token, created["id"], {"n": 1}),
    ):
        with pytest.raises(ApiError) as err:
            call()
        assert err.value.code == "NOT_FOUND"


def test_list_is_paginated_newest_first(api: Api, alice: Account) -> None:
    ids = [
        api.create_workflow(alice.token, name=f"W{i}", definition=SIMPLE_DAG)["id"]
        for i in range(3)
    ]
    first = api.list_workflows(alice.token, page=1, page_size=2)
    second = api.list_workflows(alice.token, page=2, page_size=2)
    beyond = api.list_workflows(alice.token, page=5, page_size=2)
    assert first["total"] == second["total"] == 3
    assert [w["id"] for w in first["items"] + second["items"]] == ids[::-1]
    assert beyond["items"] == []
    assert beyond["total"] == 3
    for bad in ({"page": 0}, {"page_size": 101}, {"page_size": 0}):
        with pytest.raises(ApiError) as err:
            api.list_workflows(alice.token, **bad)  # type: ignore[arg-type]
        assert err.value.code == "VALIDATION_ERROR"


def _dag(**changes: Any) -> dict[str, Any]:
    dag = copy.deepcopy(SIMPLE_DAG)
    dag.update(changes)
    return dag


def _with_node(node: dict[str, Any], edges: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    dag = copy.deepcopy(SIMPLE_DAG)
    dag["nodes"].append(node)
    dag["edges"].extend(edges or [])
    return dag


INVALID: dict[str, tuple[Any, str]] = {
    "not-an-object": ([1, 2], "object"),
    "no-nodes": ({"nodes": [], "edges": []}, "nodes"),
    "bad-id": (
        _with_node({"id": "9lives", "type": "TRANSFORM", "config": {"output": 1}}),
        "9lives",
    ),
    "duplicate-id": (
        _with_node({"id": "shape", "type": "TRANSFORM", "config": {"output": 1}}),
        "shape",
    ),
    "unknown-type": (_with_node({"id": "x", "type": "TELEPORT", "config": {}}), "TELEPORT"),
    "missing-config": (_with_node({"id": "x", "type": "HTTP_REQUEST", "config": {}}), "url"),
    "extra-config": (
        _with_node({"id": "x", "type": "DELAY", "config": {"seconds": 1, "bogus": 2}}),
        "bogus",
    ),
    "edge-to-nowhere": (
        _dag(edges=[*SIMPLE_DAG["edges"], {"from": "join", "to": "ghost"}]),
        "ghost",
    ),
    "cycle": (
        _dag(edges=[*SIMPLE_DAG["edges"], {"from": "join", "to": "shape"}]),
        "cycle",
    ),
    "condition-edge-without-when": (
        _dag(edges=[{"from": "shape", "to": "check"}, {"from": "check", "to": "big"}]),
        "check",
    ),
    "plain-edge-with-when": (
        _dag(edges=[{"from": "shape", "to": "check", "when": True}]),
        "shape",
    ),
    "bad-template": (
        _with_node({"id": "t", "type": "TRANSFORM", "config": {"output": "{{ input. }}"}}),
        "t",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_definitions_are_rejected_by_name(api: Api, alice: Account, case: str) -> None:
    definition, named = INVALID[case]
    with pytest.raises(ApiError) as err:
        api.create_workflow(alice.token, name="Bad", definition=definition)
    assert err.value.code == "VALIDATION_ERROR"
    assert named in err.value.message
    assert api.list_workflows(alice.token)["total"] == 0  # nothing was stored


def test_cycle_names_its_nodes(api: Api, alice: Account) -> None:
    dag = {
        "nodes": [
            {"id": n, "type": "TRANSFORM", "config": {"output": {}}} for n in ("a", "b", "c")
        ],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "c", "to": "b"}],
    }
    with pytest.raises(ApiError) as err:
        api.create_workflow(alice.token, name="Loop", definition=dag)
    assert err.value.code == "VALIDATION_ERROR"
    # Every message holds the letters b and c; only the path names the cycle, a left out.
    cycle = re.search(r"cycle: ((?:\w+ -> )+\w+)", err.value.message)
    assert cycle is not None, err.value.message
    assert cycle.group(1) in {"b -> c -> b", "c -> b -> c"}


def test_invalid_update_keeps_the_old_version(api: Api, alice: Account) -> None:
    created = api.create_workflow(alice.token, name="Keep", definition=SIMPLE_DAG)
    with pytest.raises(ApiError):
        api.update_workflow(alice.token, created["id"], definition={"nodes": "nope"})
    assert api.get_workflow(alice.token, created["id"]) == created
