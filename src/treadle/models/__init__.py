"""SQLAlchemy 2 models. Every tenant-owned row carries ``tenant_id``; keys are UUIDs."""

from treadle.models.base import Base, TenantOwned
from treadle.models.run import WorkflowEvent, WorkflowRun, WorkflowStep
from treadle.models.tenant import Tenant, User
from treadle.models.trigger import WorkflowTrigger
from treadle.models.workflow import Workflow

__all__ = [
    "Base",
    "Tenant",
    "TenantOwned",
    "User",
    "Workflow",
    "WorkflowEvent",
    "WorkflowRun",
    "WorkflowStep",
    "WorkflowTrigger",
]
