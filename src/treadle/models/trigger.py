"""A workflow's triggers as rows: the public id of each, a webhook's secret, a cron's next tick.

The definition (``triggers``) says what a trigger is; this row is its state, kept in step with
the definition when a workflow is created or updated (``services.triggers``).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from treadle.models.base import Base, TenantOwned, UTCDateTime, new_id, utcnow


class WorkflowTrigger(TenantOwned, Base):
    __tablename__ = "workflow_triggers"
    __table_args__ = (
        UniqueConstraint("workflow_id", "key"),
        Index("ix_workflow_triggers_next_at", "next_at"),
    )

    # The public trigger id: ``POST /api/hooks/<id>``.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    workflow_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("workflows.id", ondelete="CASCADE")
    )
    key: Mapped[str] = mapped_column(String(64))  # the trigger's id within the definition
    type: Mapped[str] = mapped_column(String(16))  # cron | webhook
    # webhook: the HMAC key, made here and never sent but to an ADMIN.
    secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # cron: what the schedule was computed from, and the next tick to fire (UTC).
    schedule: Mapped[str | None] = mapped_column(String(200), nullable=True)
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    next_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_tick: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
