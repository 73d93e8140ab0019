"""``GET /metrics``: the Prometheus text exposition, guarded by a bearer token when set.

In production the endpoint exists only when ``TREADLE_METRICS_TOKEN`` is set (otherwise 404,
as for any unknown route), and then only for ``Authorization: Bearer <that token>``. Outside
production it is open unless a token is set, in which case the token is required there too.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from treadle.metrics import CONTENT_TYPE, check_metrics_token
from treadle.resources import Resources


async def metrics(request: Request) -> Response:
    resources: Resources = request.state.resources
    settings = resources.settings
    check_metrics_token(
        settings.treadle_metrics_token,
        settings.is_production,
        request.headers.get("authorization"),
    )
    return Response(resources.metrics.render(), media_type=CONTENT_TYPE)


def metrics_routes() -> list[Route]:
    return [Route("/metrics", metrics, methods=["GET"])]
