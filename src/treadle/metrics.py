"""Prometheus metrics: built by each entry point, passed down in ``Resources``.

Invariants:
- Importing this module builds nothing: no registry, no metric, no thread, and it does not
  import prometheus_client (``Metrics()`` does). ``Metrics()`` is called by ``create_app`` and
  by the worker's ``create_broker`` when the worker's values are served (a metrics port, or a
  PROMETHEUS_MULTIPROC_DIR); a worker without one gets ``Metrics.disabled()``, which records
  nothing and never loads prometheus_client. ``open_resources`` builds a private registry when
  none is given, e.g. for ``treadle seed``.
- Labels are low-cardinality: ``tenant`` (the tenant id), step ``type``, run/step ``status``
  and an attempt's ``outcome``. Never a run id, step id, node id or error message.
- Run and step counters are derived from the events a transaction committed (``observe_events``
  runs after commit), so a rolled-back change is never counted. Each process counts what it
  committed: the API its executes and cancels, workers the steps; Prometheus sums instances.
- A ``treadle worker`` with several processes writes to a shared PROMETHEUS_MULTIPROC_DIR
  (prometheus-client's multiprocess mode) and its parent serves the aggregate on one port.
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, ParamSpec, Protocol

from treadle.engine.json import JSON
from treadle.errors import NotFoundError, UnauthenticatedError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.registry import Collector


class EventView(Protocol):
    """What counting needs of a committed event (``services.views.EventView`` has it)."""

    @property
    def type(self) -> str: ...
    @property
    def node_id(self) -> str | None: ...
    @property
    def data(self) -> JSON: ...


logger = logging.getLogger(__name__)
P = ParamSpec("P")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_FINISHED_RUN = {"RUN_COMPLETED": "COMPLETED", "RUN_FAILED": "FAILED", "RUN_CANCELLED": "CANCELLED"}
_FINISHED_STEP = {
    "STEP_COMPLETED": "COMPLETED",
    "STEP_FAILED": "FAILED",
    "STEP_SKIPPED": "SKIPPED",
    "STEP_CANCELLED": "CANCELLED",
}
WORKER_LOST_CODE = "WORKER_LOST"


def check_metrics_token(token: str | None, production: bool, authorization: str | None) -> None:
    """Raise unless the caller may read metrics (the API's /metrics and the worker port).

    In production, no token configured means no metrics endpoint (404); with a token, every
    caller must present it as a bearer token (401 otherwise).
    """
    if not token:
        if production:
            raise NotFoundError("no such route")
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), token):
        raise UnauthenticatedError("a valid metrics token is required")


def render_multiprocess(path: str, extra: Sequence[Collector] = ()) -> bytes:
    """The sum over every process that wrote to the multiprocess directory ``path``."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


def _never_raises(method: Callable[P, None]) -> Callable[P, None]:
    """Metrics are recorded on the hot path (after commit, around a step): a failure to record
    (say, a full disk under the multiprocess directory) is logged, never propagated."""

    @functools.wraps(method)
    def safe(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            method(*args, **kwargs)
        except Exception:
            logger.warning("recording a metric failed", exc_info=True)

    return safe


def _subscriber_collector(count: Callable[[], int]) -> Collector:
    """Live subscriptions of this API process, read from the event bus at scrape time."""
    from prometheus_client.core import GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector

    class SubscriberCollector(Collector):
        def collect(self) -> Iterator[Metric]:
            gauge = GaugeMetricFamily(
                "treadle_live_subscribers", "Live run-event subscriptions (GraphQL and SSE) here"
            )
            gauge.add_metric([], float(count()))
            yield gauge

    return SubscriberCollector()


class Metrics:
    """Every Treadle metric, on one registry (or a multiprocess directory)."""

    enabled: ClassVar[bool] = True

    def __init__(
        self, registry: CollectorRegistry | None = None, *, multiprocess_dir: str | None = None
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir
        self._extra: list[Collector] = []
        self._subscribers: Collector | None = None
        self._count_subscribers: Callable[[], int] = lambda: 0
        reg = self.registry
        self.runs_started = Counter(
            "treadle_runs_started", "Runs started (executed)", ["tenant"], registry=reg
        )
        self.runs_resumed = Counter(
            "treadle_runs_resumed", "Runs re-run from a step", ["tenant"], registry=reg
        )
        self.runs_finished = Counter(
            "treadle_runs_finished", "Runs finished, by status", ["tenant", "status"], registry=reg
        )
        self.steps_finished = Counter(
            "treadle_steps_finished",
            "Steps finished, by type and status",
            ["tenant", "type", "status"],
            registry=reg,
        )
        self.step_retries = Counter(
            "treadle_step_retries",
            "Step attempts that will be retried",
            ["tenant", "type"],
            registry=reg,
        )
        self.lease_expiries = Counter(
            "treadle_lease_expiries",
            "Step attempts lost with their worker (WORKER_LOST)",
            ["tenant"],
            registry=reg,
        )
        self.step_duration = Histogram(
            "treadle_step_duration_seconds",
            "Duration of one step attempt, by type and outcome",
            ["type", "outcome"],
            buckets=STEP_BUCKETS,
            registry=reg,
        )
        self.queue_lag = Histogram(
            "treadle_queue_lag_seconds",
            "From a step being ready (or due) to a worker claiming it",
            ["type"],
            buckets=LAG_BUCKETS,
            registry=reg,
        )

    @classmethod
    def disabled(cls) -> Metrics:
        """Metrics that record nothing and never import prometheus_client: for a worker whose
        values nobody could read (no metrics port), which should not pay their memory."""
        return _DisabledMetrics()

    def watch_subscribers(self, count: Callable[[], int]) -> None:
        """Report ``count()`` as the live-subscriber gauge (the API's event bus); a second
        call (the app's lifespan run again) replaces the source rather than adding a gauge."""
        self._count_subscribers = count
        if self._subscribers is None:
            self._subscribers = _subscriber_collector(lambda: self._count_subscribers())
            self._extra.append(self._subscribers)
            self.registry.register(self._subscribers)

    @_never_raises
    def observe_events(
        self, tenant_id: object, events: Sequence[EventView], step_types: Mapping[str, str]
    ) -> None:
        """Count what one committed transaction did, from the events it wrote."""
        tenant = str(tenant_id)
        for event in events:
            kind = event.type
            if kind == "RUN_CREATED":
                self.runs_started.labels(tenant).inc()
            elif kind == "RUN_RESUMED":
                self.runs_resumed.labels(tenant).inc()
            elif kind in _FINISHED_RUN:
                self.runs_finished.labels(tenant, _FINISHED_RUN[kind]).inc()
            elif kind in _FINISHED_STEP or kind == "STEP_RETRYING":
                self._observe_step_event(tenant, event, step_types)

    def _observe_step_event(
        self, tenant: str, event: EventView, step_types: Mapping[str, str]
    ) -> None:
        step_type = step_types.get(event.node_id or "", "UNKNOWN")
        if event.type == "STEP_RETRYING":
            self.step_retries.labels(tenant, step_type).inc()
        else:
            self.steps_finished.labels(tenant, step_type, _FINISHED_STEP[event.type]).inc()
        error = event.data.get("error") if isinstance(event.data, dict) else None
        if isinstance(error, dict) and error.get("code") == WORKER_LOST_CODE:
            self.lease_expiries.labels(tenant).inc()

    @_never_raises
    def observe_attempt(self, step_type: str, outcome: str, seconds: float) -> None:
        self.step_duration.labels(step_type, outcome).observe(max(0.0, seconds))

    @_never_raises
    def observe_lag(self, step_type: str, seconds: float) -> None:
        self.queue_lag.labels(step_type).observe(max(0.0, seconds))

    def render(self) -> bytes:
        """The Prometheus text exposition of this process (or of every process sharing the
        multiprocess directory)."""
        if self.multiprocess_dir is None:
            from prometheus_client import generate_latest

            return generate_latest(self.registry)
        return render_multiprocess(self.multiprocess_dir, self._extra)


class _DisabledMetrics(Metrics):
    """``Metrics.disabled()``: every method a no-op; no registry, no prometheus_client."""

    enabled: ClassVar[bool] = False

    def __init__(self) -> None:  # no super().__init__(): that builds the registry
        self.multiprocess_dir = None

    def watch_subscribers(self, count: Callable[[], int]) -> None:
        return None

    def observe_events(
        self, tenant_id: object, events: Sequence[EventView], step_types: Mapping[str, str]
    ) -> None:
        return None

    def observe_attempt(self, step_type: str, outcome: str, seconds: float) -> None:
        return None

    def observe_lag(self, step_type: str, seconds: float) -> None:
        return None

    def render(self) -> bytes:
        return b""
