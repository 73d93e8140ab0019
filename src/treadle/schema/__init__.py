"""GraphQL types, inputs, scalars, errors and the per-request context.

Invariants: the types hold no SQL; a field that needs data asks a service function through
``GraphQLContext`` (a DataLoader for the nested lists, so a page of parents costs a fixed
number of queries). The roots are in ``treadle.resolvers``, which also builds the schema
(``resolvers.build.build_schema``); nothing here imports them, so the two have no cycle.
"""
