"""Per-tenant job quotas: how many jobs one tenant may have running and queued at once.

`check_job_quota` runs at the top of a submission (after an idempotent replay, which creates
nothing). It counts in the database with the tenant's row locked for the rest of the
submission's transaction (the submission locks it, and looks its Idempotency-Key up, in one
statement first), so two concurrent submissions of one tenant cannot both take the last slot; other
tenants are neither counted nor blocked.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from streamguard.db.jobs import count_jobs_by_status
from streamguard.db.models import JobStatus
from streamguard.errors import TooManyRequests
from streamguard.settings import Settings

#: A queued job starts, or a running one finishes, on the scale of minutes; asking the client
#: to come back sooner would only turn the quota into polling.
QUOTA_RETRY_AFTER_S = 60


def check_job_quota(*, session: Session, settings: Settings, tenant_id: str,
                    locked: bool = False) -> None:
    """Refuse a new job while the tenant is at its running or queued limit. `locked`: the
    caller holds the tenant's row already (`jobs.lock_tenant_row`), else it is locked here.

    Raises:
        TooManyRequests: the tenant already has `api.max_running_jobs_per_tenant` running jobs
            or `api.max_queued_jobs_per_tenant` queued ones (`retry_after_s` for the header).
    """
    counts = count_jobs_by_status(session=session, tenant_id=tenant_id,
                                  statuses=(JobStatus.QUEUED, JobStatus.RUNNING),
                                  lock_tenant=not locked)
    queued = counts.get(JobStatus.QUEUED.value, 0)
    running = counts.get(JobStatus.RUNNING.value, 0)
    max_queued = settings.api.max_queued_jobs_per_tenant
    max_running = settings.api.max_running_jobs_per_tenant
    if queued >= max_queued:
        raise TooManyRequests(
            f"you already have {queued} queued jobs, this deployment's limit per tenant is "
            f"{max_queued}; retry when one has started, or cancel one "
            "(POST /v1/jobs/{id}/cancel)", retry_after_s=QUOTA_RETRY_AFTER_S)
    if running >= max_running:
        raise TooManyRequests(
            f"you already have {running} running jobs, this deployment's limit per tenant is "
            f"{max_running}; retry when one has finished, or cancel one "
            "(POST /v1/jobs/{id}/cancel)", retry_after_s=QUOTA_RETRY_AFTER_S)
