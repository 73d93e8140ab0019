"""DataLoaders for the nested list fields (``Workflow.runs``, ``Run.events``): a page of
parents costs one transaction and a fixed number of queries, not one of each per parent.

Invariants: not cached (a websocket's context lives as long as the connection, and runs and
events change); they count against no rate limit (the root field that led here already did).
"""

import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from strawberry.dataloader import DataLoader

from treadle.errors import TreadleError
from treadle.services import batch
from treadle.services.context import ServiceContext
from treadle.services.views import EventView, Page, RunView

T = TypeVar("T")
Opener = Callable[[], AbstractAsyncContextManager[ServiceContext]]
# (workflow id, status, page, page size) and (run id, after seq, limit): the parent, then the
# field's arguments.
RunsKey = tuple[uuid.UUID, str | None, int | None, int | None]
EventsKey = tuple[uuid.UUID, int | None, int | None]
Fetch = Callable[[ServiceContext, list[uuid.UUID], tuple[Any, ...]], Awaitable[Sequence[T]]]


async def _by_arguments(
    ctx: ServiceContext, keys: Sequence[tuple[Any, ...]], fetch: Fetch[T]
) -> list[T | BaseException]:
    """One fetch per distinct set of arguments: siblings normally share their field's."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key[1:], []).append(index)
    results: dict[int, T | BaseException] = {}
    for arguments, indexes in groups.items():
        found: Sequence[T | BaseException]
        try:
            found = await fetch(ctx, [keys[i][0] for i in indexes], arguments)
        except TreadleError as exc:  # bad arguments: an error for these keys only
            found = [exc] * len(indexes)
        results.update(zip(indexes, found, strict=True))
    return [results[index] for index in range(len(keys))]


async def _runs(
    ctx: ServiceContext, ids: list[uuid.UUID], arguments: tuple[Any, ...]
) -> list[Page[RunView]]:
    status, page, page_size = arguments
    return await batch.list_runs_of_workflows(ctx, ids, status, page, page_size)


async def _events(
    ctx: ServiceContext, ids: list[uuid.UUID], arguments: tuple[Any, ...]
) -> list[list[EventView]]:
    after_seq, limit = arguments
    return await batch.list_events_of_runs(ctx, ids, after_seq, limit)


def runs_loader(open_context: Opener) -> DataLoader[RunsKey, Page[RunView]]:
    async def load(keys: list[RunsKey]) -> list[Page[RunView] | BaseException]:
        async with open_context() as ctx:
            return await _by_arguments(ctx, keys, _runs)

    return DataLoader(load_fn=load, cache=False)


def events_loader(open_context: Opener) -> DataLoader[EventsKey, list[EventView]]:
    async def load(keys: list[EventsKey]) -> list[list[EventView] | BaseException]:
        async with open_context() as ctx:
            return await _by_arguments(ctx, keys, _events)

    return DataLoader(load_fn=load, cache=False)
