"""Schema construction with the limits every deployment gets."""

from collections.abc import Callable
from datetime import datetime

import strawberry
from graphql.error import GraphQLError
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from treadle.resolvers.fanout import Limits, SharedRunEvents
from treadle.resolvers.mutation import Mutation
from treadle.resolvers.query import Query
from treadle.resolvers.subscription import Subscription
from treadle.schema.errors import DomainErrors
from treadle.schema.limits import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS
from treadle.services.views import iso


def _serialize_datetime(value: datetime) -> str:
    return iso(value) or ""


# The REST spelling of instants (``...Z``), not Strawberry's ``+00:00``: one format per API.
DATETIME = strawberry.scalar(
    name="DateTime",
    description="An ISO-8601 instant in UTC, written with a trailing Z.",
    serialize=_serialize_datetime,
    parse_value=datetime.fromisoformat,
)


class TreadleSchema(strawberry.Schema):
    # Plain runEvents subscriptions over websockets: one execution per event, not per socket.
    shared_run_events: SharedRunEvents

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # DomainErrors already logged what deserves it; client mistakes are not server errors.
        return None


def build_schema(*, production: bool = False) -> strawberry.Schema:
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: DomainErrors(hide_suggestions=production),
        # Clients send the same few documents over and over (a subscription per run view).
        # (No ParserCache: it would bypass MaxTokensLimiter's bounded parse.)
        lambda: ValidationCache(maxsize=256),
    ]
    if production:
        from strawberry.extensions import DisableIntrospection

        extensions.insert(0, DisableIntrospection)
    schema = TreadleSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map={datetime: DATETIME}),
    )
    schema.shared_run_events = SharedRunEvents(schema._schema, Limits(MAX_TOKENS, MAX_ALIASES))
    return schema
