"""Parsed run definitions, cached per workflow version.

A run's definition is a snapshot of its workflow at one version, and every update bumps the
version, so (workflow id, version) names one definition for good: parse it once per process.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from treadle.engine.dag import Dag, parse_definition
from treadle.engine.json import JSONObject
from treadle.engine.steps import StepRegistry

DagKey = tuple[uuid.UUID, int]  # (workflow id, workflow version)


class DagCache:
    """A bounded LRU of parsed definitions, keyed by (workflow id, workflow version)."""

    def __init__(self, registry: StepRegistry, size: int = 2048) -> None:
        self._registry = registry
        self._size = size
        self._items: OrderedDict[DagKey, Dag] = OrderedDict()

    def get(self, key: DagKey, definition: JSONObject) -> Dag:
        dag = self._items.get(key)
        if dag is None:
            dag = parse_definition(definition, self._registry)
            self._items[key] = dag
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return dag
