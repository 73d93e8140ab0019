"""Schema construction with the limits every deployment gets."""

from collections.abc import Callable

import strawberry
from graphql.error import GraphQLError
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from treadle.resolvers.mutation import Mutation
from treadle.resolvers.query import Query
from treadle.resolvers.subscription import Subscription
from treadle.schema.errors import DomainErrors

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 5000


class TreadleSchema(strawberry.Schema):
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
    return TreadleSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
    )
