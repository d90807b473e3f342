"""Persistence shared by the API and the workers: models, sessions, repositories, migrations.

Repositories are modules of keyword-only functions that take a `session` and leave committing
to the caller: `tenants`, `datasets`, `jobs`, `metrics`. No SQL lives outside this package.
"""

from streamguard.db.models import (
    TERMINAL_STATUSES,
    ApiKey,
    Base,
    Checkpoint,
    Dataset,
    EpochMetric,
    EventKind,
    Job,
    JobEvent,
    JobStatus,
    JobTransition,
    StepMetric,
    Tenant,
)
from streamguard.db.session import make_engine, make_session_factory

__all__ = [
    "TERMINAL_STATUSES", "ApiKey", "Base", "Checkpoint", "Dataset", "EpochMetric", "EventKind",
    "Job", "JobEvent", "JobStatus", "JobTransition", "StepMetric", "Tenant", "make_engine",
    "make_session_factory",
]
