"""Tenant wall: row-level security on every tenant-owned table (PostgreSQL only).

The application switches to the role ``treadle_app`` inside each transaction (``SET LOCAL
ROLE`` via ``set_config('role', …, true)``) and names its tenant in ``treadle.tenant_id``; the
policies below then hide and refuse every other tenant's rows, even when ``DATABASE_URL``
names a superuser or the tables' owner (RLS is forced). A few cross-tenant system paths (login
by email, the reaper) set ``treadle.scope = 'system'`` instead.

Revision ID: 5b1f0c2a9d01
Revises: 0992f5d2b8c3
Create Date: 2026-11-26 06:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5b1f0c2a9d01"
down_revision: str | None = "0992f5d2b8c3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "treadle_app"
TENANT_TABLES = ("users", "workflows", "workflow_runs", "workflow_steps", "workflow_events")
ALL_TABLES = ("tenants", *TENANT_TABLES)
POLICY = (
    "current_setting('treadle.scope', true) = 'system' "
    "OR tenant_id = NULLIF(current_setting('treadle.tenant_id', true), '')::uuid"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite keeps the application's own scoping
    op.execute(
        f"""
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
            CREATE ROLE {APP_ROLE} NOLOGIN NOSUPERUSER NOBYPASSRLS;
          END IF;
        END $$;
        """
    )
    op.execute(f"GRANT {APP_ROLE} TO CURRENT_USER")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}")
    for table in ALL_TABLES:
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")
    for table in TENANT_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY tenant_isolation ON {table} USING ({POLICY}) WITH CHECK ({POLICY})"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TENANT_TABLES:
        op.execute(f"DROP POLICY IF EXISTS tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for table in ALL_TABLES:
        op.execute(f"REVOKE ALL ON {table} FROM {APP_ROLE}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_ROLE}")
