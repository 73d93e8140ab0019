"""Import Taskiq without aiohttp, for ``treadle worker`` (a workaround of a third-party import).

``import taskiq`` imports ``taskiq.middlewares``, which imports ``TaskiqAdminMiddleware``, whose
module imports aiohttp: about 40 modules and 10 MB in the worker's supervisor and in every
process it forks. Treadle never uses that middleware. ``import_taskiq()`` imports Taskiq while a
stand-in is registered for that one module, then removes the stand-in, so:

- ``taskiq.middlewares.TaskiqAdminMiddleware`` is the stand-in class; constructing it imports
  the real module (and aiohttp) and returns a real ``TaskiqAdminMiddleware``;
- a later ``import taskiq.middlewares.taskiq_admin_middleware`` gets the real module.

Risk: it depends on Taskiq's module layout (taskiq 0.13, pinned in constraints.txt). If a release
moves the aiohttp import, the stand-in just goes unused and aiohttp loads again; nothing breaks,
and ``tests/integration/test_worker_imports.py`` fails to say so. Nothing else is patched.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any, Final

ADMIN_MODULE: Final = "taskiq.middlewares.taskiq_admin_middleware"


class _AdminMiddlewareStandIn:
    """Stands for ``TaskiqAdminMiddleware``: making one loads and returns the real class's."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        real = importlib.import_module(ADMIN_MODULE)
        return real.TaskiqAdminMiddleware(*args, **kwargs)


def import_taskiq() -> None:
    """Import ``taskiq`` without its admin middleware's aiohttp; a no-op once it is imported."""
    if "taskiq" in sys.modules or ADMIN_MODULE in sys.modules:
        return
    stand_in = types.ModuleType(ADMIN_MODULE, "stand-in: see treadle.tasks.lean")
    stand_in.TaskiqAdminMiddleware = _AdminMiddlewareStandIn  # type: ignore[attr-defined]
    sys.modules[ADMIN_MODULE] = stand_in
    try:
        importlib.import_module("taskiq")
    finally:
        if sys.modules.get(ADMIN_MODULE) is stand_in:
            del sys.modules[ADMIN_MODULE]
