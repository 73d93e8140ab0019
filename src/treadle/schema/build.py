"""Schema construction with the limits every deployment gets."""

from collections.abc import Callable, Iterable
from typing import Any

import strawberry
from graphql.error import GraphQLError
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from treadle.resolvers.mutation import Mutation
from treadle.resolvers.query import Query
from treadle.resolvers.subscription import Subscription
from treadle.schema.errors import DomainErrors

MAX_DEPTH = 10
MAX_ALIASES = 30
MAX_TOKENS = 5000


class TreadleSchema(strawberry.Schema):
    @property
    def hide_suggestions(self) -> bool:
        """Production schemas (no introspection) do not suggest names in errors either."""
        return DisableIntrospection in self.extensions

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # DomainErrors already logged what deserves it; client mistakes are not server errors.
        return None

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """A single result: never a subscription. Subscriptions use websockets (``subscribe``);
        one sent over HTTP POST is a 400 (Strawberry would run it as a query and fail)."""
        allowed = set(allowed_operation_types or (OperationType.QUERY, OperationType.MUTATION))
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed - {OperationType.SUBSCRIPTION},
            operation_extensions,
        )


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
        extensions.insert(0, DisableIntrospection)
    return TreadleSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
    )
