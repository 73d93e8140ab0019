"""GraphQL types only: no data access. Built by ``schema.build.build_schema``."""
