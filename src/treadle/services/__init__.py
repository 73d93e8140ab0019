"""Use cases: the one code path shared by GraphQL, REST and tasks.

Invariants:
- Every query on a tenant-owned table filters on the caller's tenant (``owned_by``); another
  tenant's row is ``NotFoundError``, indistinguishable from a missing one.
- Functions return frozen views, never ORM objects.
- Side effects outside the database (enqueue, publish) run only after commit.
"""
