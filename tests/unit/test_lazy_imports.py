"""Heavy libraries are imported where they are used, not where the worker's modules load.

Each import check runs in a fresh interpreter (this one has everything loaded already).
``tests/integration/test_worker_imports.py`` checks the same in a real ``treadle worker``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import httpx
import pytest

from tests.conftest import TEST_SECRET
from treadle.metrics import Metrics
from treadle.net.address import EgressPolicy
from treadle.net.lazy import LazyHttpClient
from treadle.ratelimit import RateLimiter
from treadle.settings import Settings


def fresh(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter; it must print one JSON value, which is returned."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


LOADED = """
    def loaded(*names):
        return sorted(n for n in names if n in sys.modules)
"""


def test_the_worker_modules_import_no_api_http_or_metrics_library() -> None:
    result = fresh(
        "import json, sys\n"
        + textwrap.dedent(LOADED)
        + """
from treadle.engine.steps import build_registry
import treadle.engine.triggers, treadle.metrics, treadle.net.lazy
import treadle.ratelimit, treadle.resources, treadle.security, treadle.tasks.broker
build_registry()
print(json.dumps({"loaded": loaded(
    "httpx", "jwt", "passlib", "limits", "prometheus_client", "croniter", "openai"
)}))
"""
    )
    assert result == {"loaded": []}


def test_taskiq_imported_leanly_has_no_aiohttp_but_its_admin_middleware_still_works() -> None:
    result = fresh(
        "import json, sys\n"
        + textwrap.dedent(LOADED)
        + """
from treadle.tasks.lean import import_taskiq
import_taskiq()
import taskiq.middlewares
before = loaded("taskiq", "aiohttp")
middleware = taskiq.middlewares.TaskiqAdminMiddleware(url="http://127.0.0.1:1", api_token="t")
print(json.dumps({
    "before": before,
    "after": loaded("aiohttp"),
    "real": type(middleware).__module__,
}))
"""
    )
    assert result == {
        "before": ["taskiq"],
        "after": ["aiohttp"],
        "real": "taskiq.middlewares.taskiq_admin_middleware",
    }


def test_taskiq_imported_plainly_loads_aiohttp() -> None:
    """The baseline the stand-in removes (if Taskiq stops importing it, drop treadle.tasks.lean)."""
    result = fresh("import json, sys\nimport taskiq\nprint(json.dumps('aiohttp' in sys.modules))")
    assert result is True


def test_disabled_metrics_record_nothing_and_import_nothing() -> None:
    result = fresh(
        """
import json, sys
from treadle.metrics import Metrics
metrics = Metrics.disabled()
metrics.observe_lag("TRANSFORM", 0.1)
metrics.observe_attempt("TRANSFORM", "succeeded", 0.1)
metrics.observe_events("tenant", [], {})
print(json.dumps({"prometheus": "prometheus_client" in sys.modules,
                  "render": metrics.render().decode(), "enabled": metrics.enabled}))
"""
    )
    assert result == {"prometheus": False, "render": "", "enabled": False}
    assert Metrics().enabled


async def test_the_lazy_client_builds_on_the_first_request_and_sends_through_it() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json={"ok": True})

    builds: list[httpx.AsyncClient] = []

    def build() -> httpx.AsyncClient:
        builds.append(httpx.AsyncClient(transport=httpx.MockTransport(handler)))
        return builds[-1]

    client = LazyHttpClient(build)
    assert not client.built
    url = httpx.URL("http://example.test/a")
    async with client.stream("GET", url, headers={"X": "1"}, timeout=5) as response:
        assert response.status_code == 200
    async with client.stream("POST", url, headers={}, timeout=5, json={"n": 1}):
        pass
    assert len(builds) == 1
    assert seen == ["http://example.test/a", "http://example.test/a"]
    await client.aclose()
    assert builds[0].is_closed


async def test_a_lazy_client_never_used_closes_without_building() -> None:
    client = LazyHttpClient.guarded(EgressPolicy.from_setting(""))
    await client.aclose()
    assert not client.built


def test_the_guarded_lazy_client_is_the_egress_guarded_one() -> None:
    client = LazyHttpClient.guarded(EgressPolicy.from_setting(""))
    assert type(client.client._transport).__name__ == "GuardedTransport"


def test_rate_limits_are_parsed_at_start_unless_lazy() -> None:
    bad = Settings(jwt_secret=TEST_SECRET, treadle_rate_api_per_tenant="lots")
    with pytest.raises(ValueError, match="lots"):
        RateLimiter.build(bad, None)
    lazy = RateLimiter.build(bad, None, lazy=True)  # a worker: never counts a hit
    with pytest.raises(ValueError, match="lots"):
        _ = lazy.limits
