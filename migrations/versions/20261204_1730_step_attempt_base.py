"""workflow_steps.attempt_base: attempts made before a rerun (retry policy counts after it)

Revision ID: 7c3e9a41d2b5
Revises: 5b1f0c2a9d01
Create Date: 2026-12-04 17:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c3e9a41d2b5"
down_revision: str | None = "5b1f0c2a9d01"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workflow_steps", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("attempt_base", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("workflow_steps", schema=None) as batch_op:
        batch_op.drop_column("attempt_base")
