"""Job use cases: submit (validate, insert, commit, then enqueue), read, list, cancel, metrics.

No HTTP here: failures are `StreamGuardError`s that `api.errors` maps to status codes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from api.errors import IdempotencyConflict, InvalidRequest, QueueUnavailable
from api.queue import Enqueue
from api.schemas import (
    DatasetRef,
    EpochMetricPage,
    EpochMetricRead,
    JobCreate,
    JobDatasets,
    JobPage,
    JobRead,
    JobSummary,
    Progress,
    TransitionRead,
)
from streamguard.db import jobs as jobs_repo
from streamguard.db import metrics as metrics_repo
from streamguard.db.datasets import get_dataset
from streamguard.db.jobs import DuplicateIdempotencyKey
from streamguard.db.models import Job, JobStatus, utcnow
from streamguard.settings import Settings
from streamguard.spec import TrainConfig, parse_train_config
from streamguard.storage import ArtifactStore, S3ArtifactStore, check_key

log = logging.getLogger(__name__)


def request_hash(body: JobCreate) -> str:
    """sha256 of the body's canonical JSON (sorted keys, no whitespace): same body, same hash."""
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def tenant_prefix(tenant_id: str) -> str:
    return f"tenants/{tenant_id}/"


# --- validation (all of it happens before anything is stored or queued) -------------------------

def _check_ref(*, session: Session, store: ArtifactStore, tenant_id: str, ref: DatasetRef,
               field: str) -> None:
    if ref.dataset_id is not None:
        if get_dataset(session=session, tenant_id=tenant_id, dataset_id=ref.dataset_id) is None:
            raise InvalidRequest(f"dataset {ref.dataset_id!r} not found among your datasets; "
                                 "upload one with POST /v1/datasets and pass its id",
                                 field=f"{field}.dataset_id")
        return
    uri = ref.uri or ""
    accepted = "a dataset_id, or s3://<bucket>/tenants/<your tenant id>/... in the " \
               "configured bucket"
    if not isinstance(store, S3ArtifactStore):
        raise InvalidRequest(f"uri {uri!r} is not accepted: this deployment stores datasets "
                             "locally, so pass a dataset_id from POST /v1/datasets",
                             field=f"{field}.uri")
    parts = urlsplit(uri)
    full_key = parts.path.lstrip("/")
    store_prefix = f"{store.prefix}/" if store.prefix else ""
    allowed = store_prefix + tenant_prefix(tenant_id)
    if parts.netloc != store.bucket or not full_key.startswith(allowed) or parts.query \
            or parts.fragment:
        raise InvalidRequest(f"uri {uri!r} is outside your area; accepted: {accepted} "
                             f"(s3://{store.bucket}/{allowed}...)", field=f"{field}.uri")
    key = full_key[len(store_prefix):]
    try:
        check_key(key)
    except Exception as exc:  # StorageError: '..', empty parts, ...
        raise InvalidRequest(f"uri {uri!r} is not a plain object key: {exc}",
                             field=f"{field}.uri") from None
    if not store.exists(key):
        raise InvalidRequest(f"no object at {uri!r}; upload it first or pass a dataset_id",
                             field=f"{field}.uri")


def validate_submission(*, session: Session, store: ArtifactStore, settings: Settings,
                        tenant_id: str, body: JobCreate) -> TrainConfig:
    """Check the config, the runtime limit and every dataset reference; returns the config.

    Raises:
        InvalidTrainConfig: naming each bad `config.<field>`.
        InvalidRequest: a runtime over the limit, or a dataset reference that is not yours.
    """
    config = parse_train_config(body.config)
    limit = settings.worker.max_job_runtime_s
    if body.max_runtime_s is not None and body.max_runtime_s > limit:
        raise InvalidRequest(f"max_runtime_s {body.max_runtime_s} is above this deployment's "
                             f"limit; accepted: 60 to {limit}", field="max_runtime_s")
    for split in ("train", "val", "test"):
        ref = getattr(body.datasets, split)
        if ref is not None:
            _check_ref(session=session, store=store, tenant_id=tenant_id, ref=ref,
                       field=f"datasets.{split}")
    return config


# --- use cases -------------------------------------------------------------------------------

def _replay(existing: Job, digest: str, key: str) -> Job:
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used by job {existing.id} with a different "
            "body; resend the same body to get that job, or use a new key", field="Idempotency-Key")
    return existing


def submit_job(*, session: Session, store: ArtifactStore, settings: Settings, tenant_id: str,
               body: JobCreate, enqueue: Enqueue,
               idempotency_key: str | None = None) -> tuple[Job, bool]:
    """Validate, insert (queued), commit, then enqueue the id. Returns (job, created).

    A repeated Idempotency-Key with the same body returns the first job (created=False) and
    enqueues nothing; with another body it raises IdempotencyConflict.

    Raises:
        QueueUnavailable: the broker refused the task; the job is recorded as failed.
    """
    digest = request_hash(body)
    if idempotency_key is not None:
        existing = jobs_repo.get_job_by_idempotency_key(
            session=session, tenant_id=tenant_id, idempotency_key=idempotency_key)
        if existing is not None:
            return _replay(existing, digest, idempotency_key), False
    config = validate_submission(session=session, store=store, settings=settings,
                                 tenant_id=tenant_id, body=body)
    spec = body.model_dump(mode="json")
    spec["config"] = config.model_dump(mode="json")  # stored with the defaults filled in
    spec["datasets"] = {split: ref.model_dump(exclude_none=True) if ref else None  # CONTRACT REF
                        for split, ref in body.datasets}
    try:
        job = jobs_repo.create_job(session=session, tenant_id=tenant_id, spec=spec,
                                   total_epochs=config.epochs, name=body.name,
                                   idempotency_key=idempotency_key, request_hash=digest)
    except DuplicateIdempotencyKey as exc:  # a concurrent request with the same key won
        session.rollback()
        winner = jobs_repo.get_job_or_raise(session=session, job_id=exc.job_id)
        return _replay(winner, digest, idempotency_key or ""), False
    session.commit()  # commit first: the worker must find the row when the task arrives
    try:
        enqueue(job.id)
    except Exception as exc:
        log.exception("enqueue of job %s failed", job.id)
        reason = f"could not be queued: {type(exc).__name__}: {exc}"
        jobs_repo.transition(session=session, job=job, to_status=JobStatus.FAILED, reason=reason)
        session.commit()
        raise QueueUnavailable(f"job {job.id} could not be queued (the broker is unavailable) "
                               "and was marked failed; retry the request later") from exc
    return job, True


def cancel_job(*, session: Session, job: Job) -> Job:
    """Queued: cancelled at once. Running: cancel_requested (the worker stops after its step).

    Raises:
        JobStateConflict: the job already finished (the message names its status).
    """
    jobs_repo.request_cancel(session=session, job=job)
    session.commit()
    return job


def list_jobs(*, session: Session, settings: Settings, tenant_id: str, limit: int,
              cursor: str | None, status: JobStatus | None) -> JobPage:
    check_limit(limit, settings)
    rows, next_cursor = jobs_repo.list_jobs(session=session, tenant_id=tenant_id, status=status,
                                            limit=limit, cursor=cursor)
    now = utcnow()
    return JobPage(items=[JobSummary(**_summary_fields(job, now)) for job in rows],
                   next_cursor=next_cursor)


def read_job(*, session: Session, job: Job) -> JobRead:
    transitions = jobs_repo.list_transitions(session=session, job_id=job.id)
    spec = job.spec or {}
    return JobRead(
        **_summary_fields(job, utcnow()),
        datasets=JobDatasets.model_validate(spec.get("datasets", {})),
        config=TrainConfig.model_validate(spec.get("config", {})),
        max_runtime_s=spec.get("max_runtime_s"),
        transitions=[TransitionRead(from_status=t.from_status, to_status=t.to_status,
                                    reason=t.reason, created_at=t.created_at)
                     for t in transitions])


def list_metrics(*, session: Session, settings: Settings, job: Job, offset: int,
                 limit: int) -> EpochMetricPage:
    check_limit(limit, settings)
    rows = metrics_repo.list_epochs(session=session, job_id=job.id, offset=offset,
                                    limit=limit + 1)
    more = len(rows) > limit
    items = [EpochMetricRead(
        epoch=row.epoch, metrics=row.record,
        prediction_distribution=_first(row.record, "prediction_distribution",
                                       "pred_distribution"),
        confusion_matrix=_first(row.record, "confusion_matrix", "confusion"),
        created_at=row.created_at, updated_at=row.updated_at) for row in rows[:limit]]
    return EpochMetricPage(items=items, offset=offset, limit=limit,
                           next_offset=offset + limit if more else None)


# --- helpers -----------------------------------------------------------------------------------

def check_limit(limit: int, settings: Settings) -> None:
    if limit > settings.api.page_size_max:
        raise InvalidRequest(f"limit {limit} is too large; accepted: 1 to "
                             f"{settings.api.page_size_max}", field="limit")


def _first(record: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    return None


def eta_seconds(job: Job, now: datetime) -> float | None:
    """Time per completed epoch so far times the epochs left; None unless running with data."""
    if job.status != JobStatus.RUNNING or not job.started_at or job.current_epoch <= 0:
        return None
    per_epoch = (now - job.started_at).total_seconds() / job.current_epoch
    return round(max(0.0, per_epoch * (job.total_epochs - job.current_epoch)), 1)


def _summary_fields(job: Job, now: datetime) -> dict[str, Any]:
    epochs = max(job.total_epochs, 1)
    epoch = min(job.current_epoch, epochs)
    config = (job.spec or {}).get("config") or {}
    return {
        "id": job.id, "name": job.name, "status": JobStatus(job.status),
        "outcome_message": job.outcome_message, "cancel_requested": job.cancel_requested,
        "progress": Progress(epoch=epoch, epochs=epochs,
                             percent=round(100.0 * epoch / epochs, 1)),
        "eta_s": eta_seconds(job, now), "best_epoch": job.best_epoch,
        "best_metric": job.best_metric, "selection_metric": config.get("selection_metric"),
        "test_metrics": job.test_metrics, "attempts": job.attempts,
        "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "heartbeat_at": job.heartbeat_at,
    }
