"""/v1/jobs: submit, list, read, cancel, per-epoch metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response

from api.deps import (
    CurrentTenant,
    EnqueueDep,
    JobDep,
    SessionDep,
    SettingsDep,
    StoreDep,
    run_in_connection,
    run_in_session,
)
from api.routes import AUTHED, error_responses
from api.schemas import EpochMetricPage, JobCreate, JobPage, JobRead, StepMetricPage
from api.services import jobs as service
from streamguard.contract import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(*AUTHED))

PAGE_MAX = 200
OFFSET_MAX = 1_000_000
STEP_PAGE_MAX = 2000
Limit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="Page size.")]
#: Checked by decode_cursor (422 `invalid_cursor`), not by the schema, so that every bad
#: cursor gets the one error code.
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page (opaque).")]


@router.post("", status_code=201, response_model=JobRead, operation_id="createJob",
             responses={200: {"model": JobRead, "description": "Idempotent replay: the job "
                              "first created with this Idempotency-Key and body"},
                        **error_responses(409, 413, 503)})
async def submit_job(
    request: Request, body: JobCreate, response: Response, tenant: CurrentTenant,
    settings: SettingsDep, store: StoreDep, enqueue: EnqueueDep,
    idempotency_key: Annotated[str | None, Header(
        min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
        description="Repeat a submission safely: the same key and body return the same job."
    )] = None,
) -> JobRead:
    """Validate everything, store the job as queued, then queue it for a GPU worker."""
    job, created = await run_in_session(  # the database work: one worker-thread hop
        request, service.submit_job, store=store, settings=settings, tenant_id=tenant.id,
        body=body, enqueue=enqueue, idempotency_key=idempotency_key)
    if not created:
        response.status_code = 200
    return job  # a JobRead, built in that hop


@router.get("", response_model=JobPage, operation_id="listJobs")
async def list_jobs(request: Request, tenant: CurrentTenant, limit: Limit = 50,
                    cursor: Cursor = None, status: JobStatus | None = None) -> JobPage:
    """Your jobs, newest first; pass `next_cursor` back as `cursor` for the next page."""
    return await run_in_connection(request, service.list_jobs, tenant_id=tenant.id, limit=limit,
                                   cursor=cursor, status=status)


@router.get("/{job_id}", response_model=JobRead, operation_id="getJob",
            responses=error_responses(404))
def get_job(job: JobDep, session: SessionDep) -> JobRead:
    """Status, outcome, progress and ETA, best epoch, test metrics and every transition."""
    return service.read_job(session=session, job=job)


@router.post("/{job_id}/cancel", response_model=JobRead, operation_id="cancelJob",
             responses=error_responses(404, 409))
def cancel_job(job: JobDep, session: SessionDep) -> JobRead:
    """Queued: cancelled at once. Running: the worker stops after its current step."""
    service.cancel_job(session=session, job=job)
    return service.read_job(session=session, job=job)


@router.get("/{job_id}/metrics", response_model=EpochMetricPage, operation_id="listJobMetrics",
            responses=error_responses(404))
def list_metrics(job: JobDep, session: SessionDep,
                 offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
                 limit: Limit = 100) -> EpochMetricPage:
    """Per-epoch evaluation records: metrics, prediction distribution, confusion matrix."""
    return service.list_metrics(session=session, job=job, offset=offset, limit=limit)


@router.get("/{job_id}/steps", response_model=StepMetricPage, operation_id="listJobSteps",
            responses=error_responses(404))
def list_steps(job: JobDep, session: SessionDep,
               after_step: Annotated[int, Query(ge=0, le=2**31 - 1, description=(
                   "Only steps after this one (the previous page's `next_after_step`)."))] = 0,
               limit: Annotated[int, Query(ge=1, le=STEP_PAGE_MAX,
                                           description="Page size.")] = 500) -> StepMetricPage:
    """Step metrics (training loss, learning rate, gradient norm) in step order, one row per
    logged optimizer step; a resumed attempt replaces the rows it ran again."""
    return service.list_steps(session=session, job=job, after_step=after_step, limit=limit)
