"""GET /v1/jobs/{id}/report.png: a picture of a job (curves and prediction distribution).

The records come from the same services as the JSON routes, dumped with `mode="json"`, so the
one renderer (`streamguard.report`) draws exactly what `streamguard report JOB` draws from the
API. Gathering and drawing run in the threadpool: a figure costs about half a second of CPU.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.deps import JobDep, SessionDep
from api.routes import AUTHED, error_responses
from api.services import events as events_service
from api.services import jobs as service
from streamguard.contract import TERMINAL_STATUSES, JobStatus
from streamguard.db.models import Job
from streamguard.report import ReportData, render_png

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(*AUTHED))

PAGE = 1000  # rows per service call while gathering (the services page; nothing is capped)
PNG: dict[int | str, dict[str, Any]] = {200: {"description": "The report as a PNG image.",
             "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}


def collect(*, session: Session, job: Job) -> ReportData:
    """The job, every epoch and step record and every warning event, as the API's JSON."""
    epochs: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        metrics = service.list_metrics(session=session, job=job, offset=offset, limit=PAGE)
        epochs += [m.model_dump(mode="json") for m in metrics.items]
        offset = metrics.next_offset
    steps: list[dict[str, Any]] = []
    after: int | None = 0
    while after is not None:
        page = service.list_steps(session=session, job=job, after_step=after, limit=PAGE)
        steps += [s.model_dump(mode="json") for s in page.items]
        after = page.next_after_step
    warnings: list[dict[str, Any]] = []
    after = 0
    while after is not None:
        events = events_service.list_events(session=session, job=job, after_id=after, limit=PAGE)
        warnings += [e.data.model_dump(mode="json") for e in events.items if e.kind == "warning"]
        after = events.next_after_id
    job_json = service.read_job(session=session, job=job).model_dump(mode="json")
    session.rollback()  # read-only: hand the connection back before the drawing starts
    return ReportData(job=job_json, epochs=epochs, steps=steps, warnings=warnings)


@router.get("/{job_id}/report.png", operation_id="getJobReport", response_class=Response,
            responses={**PNG, **error_responses(404)})
async def get_job_report(job: JobDep, session: SessionDep) -> Response:
    """The loss and score curves and the prediction distribution per epoch in one PNG, with
    collapse warnings marked and the stop reason annotated (ready for a pull request)."""
    data = await run_in_threadpool(lambda: collect(session=session, job=job))
    png = await run_in_threadpool(render_png, data)
    finished = JobStatus(data.job["status"]) in TERMINAL_STATUSES
    # A running job's picture is stale a few seconds later; a finished one changes no more.
    cache = "private, max-age=300" if finished else "no-store"
    return Response(png, media_type="image/png", headers={"Cache-Control": cache})
