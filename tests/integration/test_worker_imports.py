"""What a real ``treadle worker`` process has loaded: nothing it does not use.

Idle memory of a worker child is mostly the modules it imported. The API's libraries (pyjwt,
libpass, limits), the HTTP stack (httpx, which pulls rich, click and pygments), prometheus_client
(without a metrics port) and croniter are loaded only when something needs them, and Taskiq's
import of aiohttp (for an admin middleware we never use) is kept out (``treadle.tasks.lean``).

The worker is started through a small launcher that, before ``treadle worker`` forks its
processes, installs a SIGUSR1 handler writing ``sorted(sys.modules)`` and VmRSS to
``<dir>/<pid>.json``; the forked child inherits it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.fakes import serve_app
from tests.fakes.sink import Sink
from tests.support.client import RestApi, unique_email
from tests.support.live import ROOT, LiveServer, settings_env, stop_group
from treadle.settings import Settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

# Loaded by nothing an idle worker (or one running only pure steps) does.
NOT_LOADED = ("aiohttp", "httpx", "jwt", "passlib", "limits", "prometheus_client", "croniter")

LAUNCHER = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path

    def dump(signum, frame):
        rss = next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS"))
        data = {"modules": sorted(sys.modules), "rss_kib": int(rss)}
        path = Path(os.environ["MODULES_DIR"]) / f"{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.rename(path)

    signal.signal(signal.SIGUSR1, dump)
    from treadle.cli import main
    sys.exit(main(["worker", "--grace", "10"]))
    """
)


class Worker:
    """``treadle worker`` (1 process) under the launcher; ``modules()`` asks its child."""

    def __init__(self, settings: Settings, tmp: Path, **env: str) -> None:
        self.dir = tmp / "modules"
        self.dir.mkdir(parents=True)
        self.log = tmp / "worker.log"
        environment = settings_env(settings) | {"MODULES_DIR": str(self.dir)} | env
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own launcher
                [sys.executable, "-c", LAUNCHER],
                env=environment,
                cwd=ROOT,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while "worker ready" not in self.log.read_text(errors="replace"):
            assert self.proc.poll() is None, f"worker exited:\n{self.log.read_text()}"
            assert time.monotonic() < deadline, f"worker not ready:\n{self.log.read_text()}"
            time.sleep(0.1)

    def child(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        pids = [int(pid) for pid in children.split()]
        assert len(pids) == 1, pids
        return pids[0]

    def modules(self, pid: int) -> dict[str, Any]:
        path = self.dir / f"{pid}.json"
        path.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not path.exists():
            assert time.monotonic() < deadline, "the worker did not dump its modules"
            time.sleep(0.05)
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def stop(self) -> None:
        stop_group(self.proc, timeout=20)


def loaded(modules: list[str], package: str) -> list[str]:
    return [name for name in modules if name == package or name.startswith(package + ".")]


@pytest.fixture
def settings(private_pg_url: str, redis_url: str, tmp_path: Path) -> Settings:
    return make_settings(
        private_pg_url,
        tmp_path,
        redis_url=redis_url,
        treadle_queue_name=f"treadle:imports:{uuid.uuid4().hex[:12]}",
        log_level="info",
    )


@pytest.fixture
def worker(settings: Settings, tmp_path: Path) -> Iterator[Worker]:
    process = Worker(settings, tmp_path)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def run_to_end(api: RestApi, token: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    flow = api.create_workflow(token, name="imports", definition={"nodes": nodes, "edges": []})
    run_id = api.execute(token, flow["id"], {"n": 1})["id"]
    deadline = time.monotonic() + 30
    while (run := api.get_run(token, run_id))["status"] not in ("COMPLETED", "FAILED"):
        assert time.monotonic() < deadline, run
        time.sleep(0.05)
    return dict(run)


def absent(worker: Worker, pid: int, packages: tuple[str, ...]) -> Callable[[], None]:
    def check() -> None:
        state = worker.modules(pid)
        found = {name: loaded(state["modules"], name) for name in packages}
        assert not any(found.values()), (
            f"loaded in an idle worker ({state['rss_kib'] / 1024:.0f} MB RSS): "
            + ", ".join(f"{name} ({len(mods)} modules)" for name, mods in found.items() if mods)
        )

    return check


def test_a_worker_running_pure_steps_loads_no_api_http_or_metrics_library(
    settings: Settings, worker: Worker
) -> None:
    pid = worker.child()
    absent(worker, pid, NOT_LOADED)()
    # The supervising process, whose pages every child starts with, does not load aiohttp either.
    supervisor = worker.modules(worker.proc.pid)["modules"]
    assert not loaded(supervisor, "aiohttp")
    assert not loaded(supervisor, "prometheus_client")

    with LiveServer.api(settings) as server, RestApi(server.base_url) as api:
        account = api.register("Imports", unique_email("imports"), "correct horse battery", "I")
        nodes = [{"id": "a", "type": "TRANSFORM", "config": {"output": {"n": "{{ input.n }}"}}}]
        assert run_to_end(api, account["token"], nodes)["status"] == "COMPLETED"
    absent(worker, pid, NOT_LOADED)()


def test_the_http_client_is_loaded_by_the_first_http_step(
    settings: Settings, worker: Worker
) -> None:
    pid = worker.child()
    assert not loaded(worker.modules(pid)["modules"], "httpx")
    recorder = Sink()
    with (
        serve_app(recorder.app) as sink_url,
        LiveServer.api(settings) as server,
        RestApi(server.base_url) as api,
    ):
        account = api.register("Imports", unique_email("imports"), "correct horse battery", "I")
        nodes = [{"id": "call", "type": "HTTP_REQUEST", "config": {"url": f"{sink_url}/x"}}]
        run = run_to_end(api, account["token"], nodes)
    assert run["status"] == "COMPLETED", run
    assert recorder.requests, "the step's request reached the sink"
    assert loaded(worker.modules(pid)["modules"], "httpx")
    absent(worker, pid, ("aiohttp", "jwt", "passlib", "limits", "prometheus_client"))()


def test_a_worker_with_a_metrics_port_records_into_prometheus(
    settings: Settings, tmp_path: Path
) -> None:
    worker = Worker(
        settings.model_copy(update={"treadle_worker_metrics_port": 0}), tmp_path / "metrics"
    )
    try:
        worker.wait_ready()
        assert loaded(worker.modules(worker.child())["modules"], "prometheus_client")
    finally:
        worker.stop()
