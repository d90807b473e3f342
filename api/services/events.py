"""Job events as the contract types them: stored payloads in, one schema per kind out."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.orm import Session

from api.schemas import (
    CheckpointPayload,
    EpochMetrics,
    EvaluationMetrics,
    JobEventPage,
    JobEventRead,
    RollbackPayload,
    StatusPayload,
    StepMetrics,
    TestMetrics,
    WarningPayload,
)
from streamguard.contract import EventKind
from streamguard.db import metrics as metrics_repo
from streamguard.db.models import Job, JobEvent

_EVENT = TypeAdapter(JobEventRead)


def event_data(kind: str, payload: dict[str, Any]) -> Any:
    """The typed payload of an event of `kind` (what SSE `data:` carries)."""
    match EventKind(kind):
        case EventKind.STATUS:
            return StatusPayload.model_validate(payload)
        case EventKind.EPOCH:
            return EpochMetrics.from_record(payload)
        case EventKind.WARNING:
            return WarningPayload.model_validate(payload)
        case EventKind.CHECKPOINT:
            return CheckpointPayload.model_validate(payload)
        case EventKind.TEST:
            return TestMetrics.from_record(payload)
        case EventKind.STEP:
            return StepMetrics.model_validate(payload)
        case EventKind.EVALUATION:
            return EvaluationMetrics.from_record(payload)
        case EventKind.ROLLBACK:
            return RollbackPayload.model_validate(payload)


def to_read(event: JobEvent) -> Any:
    """A stored event as its `JobEventRead` variant."""
    return _EVENT.validate_python({"id": event.id, "kind": event.kind,
                                   "created_at": event.created_at,
                                   "data": event_data(event.kind, event.payload)})


def sse_data(event: JobEvent) -> str:
    """The JSON of the typed payload, as the SSE `data:` line sends it."""
    return str(event_data(event.kind, event.payload).model_dump_json(by_alias=True))


def list_events(*, session: Session, job: Job, after_id: int, limit: int) -> JobEventPage:
    rows = metrics_repo.list_events_after(session=session, job_id=job.id, after_id=after_id,
                                          limit=limit + 1)
    items = [to_read(e) for e in rows[:limit]]
    return JobEventPage(items=items, next_after_id=rows[limit - 1].id if len(rows) > limit
                        else None)
