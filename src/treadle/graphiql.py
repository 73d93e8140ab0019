"""The development GraphQL page: GraphiQL, with its assets served from this package.

Strawberry's own page loads React and GraphiQL from a CDN, so offline (or behind a strict
proxy) it stays a white "Loading..." page. The files under ``static/graphiql`` are copies of
the npm packages' files (see ``SOURCES.md`` there, with their licences).
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Final

from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

ASSETS: Final = "static/graphiql"
ASSETS_PATH: Final = "/static/graphiql"


@functools.cache
def graphiql_page() -> str:
    """The page served at ``GET /graphql`` to browsers (outside production)."""
    return resources.files("treadle").joinpath(ASSETS, "index.html").read_text(encoding="utf-8")


def graphiql_assets() -> Mount:
    """The page's scripts and styles, as static files."""
    return Mount(ASSETS_PATH, app=StaticFiles(packages=[("treadle", ASSETS)]), name="graphiql")
