"""Parsed run definitions, cached per run: a snapshot never changes, so parse it once."""

from __future__ import annotations

import uuid
from collections import OrderedDict

from treadle.engine.dag import Dag, parse_definition
from treadle.engine.json import JSONObject
from treadle.engine.steps import StepRegistry


class DagCache:
    def __init__(self, registry: StepRegistry, size: int = 2048) -> None:
        self._registry = registry
        self._size = size
        self._items: OrderedDict[uuid.UUID, Dag] = OrderedDict()

    def get(self, run_id: uuid.UUID, definition: JSONObject) -> Dag:
        dag = self._items.get(run_id)
        if dag is None:
            dag = parse_definition(definition, self._registry)
            self._items[run_id] = dag
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(run_id)
        return dag
