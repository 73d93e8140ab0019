"""Step output PostgreSQL cannot store (NUL, lone surrogates) fails the step once: INVALID_OUTPUT.

Before, the recording transaction failed on every delivery: the run stayed PENDING for ever.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Account
from tests.e2e.test_runs import wait_run
from tests.support.client import Api

NUL = "{{ 'a\\x00b' }}"  # Jinja string escapes: the template builds the character itself
SURROGATE = "{{ 'x\\ud800y' }}"


@pytest.mark.parametrize(
    ("node_type", "config"),
    [
        # Inline: recorded in the claiming transaction.
        ("TRANSFORM", {"output": {"text": NUL}}),
        ("TRANSFORM", {"output": [SURROGATE]}),
        ("TRANSFORM", {"output": {SURROGATE: 1}}),
        # Claimed, run outside a transaction, then recorded (the mock model echoes the prompt).
        ("AI_COMPLETION", {"prompt": f"say {NUL}"}),
    ],
)
def test_unstorable_output_fails_the_step_once(
    api: Api, alice: Account, node_type: str, config: dict[str, Any]
) -> None:
    definition = {"nodes": [{"id": "bad", "type": node_type, "config": config}]}
    workflow = api.create_workflow(alice.token, name="unstorable", definition=definition)
    run = wait_run(api, alice.token, api.execute(alice.token, workflow["id"], {})["id"])
    assert run["status"] == "FAILED", run
    (step,) = run["steps"]
    assert step["status"] == "FAILED"
    assert step["attempt"] == 1
    assert step["error"]["code"] == "INVALID_OUTPUT"
    assert "cannot be stored" in step["error"]["message"]
    assert run["error"]["code"] == "INVALID_OUTPUT"
