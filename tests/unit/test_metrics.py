"""Metrics from committed events: which event moves which counter, with which labels."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from treadle.errors import NotFoundError, UnauthenticatedError
from treadle.metrics import Metrics, check_metrics_token
from treadle.services.views import EventView

TENANT = uuid.uuid4()
LOST = {"code": "WORKER_LOST", "message": "gone"}


def event(kind: str, node: str | None = None, data: object = None) -> EventView:
    return EventView(
        id=uuid.uuid4(),
        run_id=uuid.uuid4(),
        seq=1,
        type=kind,
        node_id=node,
        data=data or {},
        created_at=datetime.now(UTC),
    )


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, {"tenant": str(TENANT), **labels})
    return found or 0.0


def test_events_move_their_counters() -> None:
    metrics = Metrics(CollectorRegistry())
    types = {"a": "HTTP_REQUEST", "b": "TRANSFORM"}
    metrics.observe_events(
        TENANT,
        [
            event("RUN_CREATED"),
            event("STEP_RETRYING", "a", {"attempt": 1, "error": LOST}),
            event("STEP_FAILED", "a", {"attempt": 2, "error": LOST}),
            event("STEP_CANCELLED", "b"),
            event("RUN_FAILED", None, {"error": LOST}),
            event("RUN_RESUMED"),
        ],
        types,
    )
    assert sample(metrics, "treadle_runs_started_total") == 1
    assert sample(metrics, "treadle_runs_resumed_total") == 1
    assert sample(metrics, "treadle_runs_finished_total", status="FAILED") == 1
    assert sample(metrics, "treadle_step_retries_total", type="HTTP_REQUEST") == 1
    assert sample(metrics, "treadle_lease_expiries_total") == 2
    finished = "treadle_steps_finished_total"
    assert sample(metrics, finished, type="HTTP_REQUEST", status="FAILED") == 1
    assert sample(metrics, finished, type="TRANSFORM", status="CANCELLED") == 1


def test_registries_are_separate() -> None:
    one, two = Metrics(), Metrics()
    one.observe_events(TENANT, [event("RUN_CREATED")], {})
    assert sample(one, "treadle_runs_started_total") == 1
    assert sample(two, "treadle_runs_started_total") == 0


def test_token_rule() -> None:
    check_metrics_token(None, False, None)  # development without a token: open
    with pytest.raises(NotFoundError):
        check_metrics_token(None, True, "Bearer anything")
    with pytest.raises(UnauthenticatedError):
        check_metrics_token("s3cret", False, None)
    with pytest.raises(UnauthenticatedError):
        check_metrics_token("s3cret", True, "Bearer s3cre")
    check_metrics_token("s3cret", True, "Bearer s3cret")


def test_a_failure_to_record_never_reaches_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics()

    def broken(*_: object) -> None:
        raise OSError("no space left on device")

    monkeypatch.setattr(metrics.runs_started, "labels", broken)
    metrics.observe_events(TENANT, [event("RUN_CREATED")], {})  # logged, not raised
    monkeypatch.setattr(metrics.queue_lag, "labels", broken)
    metrics.observe_lag("TRANSFORM", 0.1)


def test_the_subscriber_gauge_is_one_gauge_whatever_the_lifespans() -> None:
    metrics = Metrics()
    metrics.watch_subscribers(lambda: 3)
    metrics.watch_subscribers(lambda: 5)  # the app's lifespan ran again
    text = metrics.render().decode()
    assert [line for line in text.splitlines() if line.startswith("treadle_live_subscribers")] == [
        "treadle_live_subscribers 5.0"
    ]
