"""Job use cases: submit (validate, insert, commit, then enqueue), read, list, cancel, metrics.

No HTTP here: failures are `StreamGuardError`s that `api.errors` maps to status codes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import IdempotencyConflict, InvalidRequest, QueueUnavailable
from api.queue import Enqueue
from api.schemas import (
    EpochMetricPage,
    EpochMetricRead,
    JobCreate,
    JobPage,
    JobRead,
    Progress,
    StepMetricPage,
    StepMetricRead,
    TestMetrics,
    TransitionRead,
)
from api.services.datasets import read_func_hashes
from api.services.quotas import check_job_quota
from streamguard import contract
from streamguard.contract import (
    FINISHED_WITH_MODEL,
    DatasetIdRef,
    DatasetRef,
    InvalidDatasetUri,
    JobConfig,
    JobDatasets,
    JobSpec,
    JobStatus,
)
from streamguard.db import jobs as jobs_repo
from streamguard.db import metrics as metrics_repo
from streamguard.db.datasets import get_datasets
from streamguard.db.jobs import DuplicateIdempotencyKey, JobSummaryRow
from streamguard.db.models import Dataset, Job, JobTransition, utcnow
from streamguard.settings import Settings
from streamguard.storage import ArtifactStore

log = logging.getLogger(__name__)


def request_hash(body: JobCreate, spec: dict[str, Any] | None = None) -> str:
    """sha256 of the body's canonical JSON (sorted keys, no whitespace): same body, same hash.
    `spec` is `body.model_dump(mode="json")` when the caller has it already."""
    document = spec if spec is not None else body.model_dump(mode="json")
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# --- validation (all of it happens before anything is stored or queued) -------------------------

def _check_model(*, session: Session, settings: Settings, tenant_id: str,
                 config: JobConfig) -> None:
    """The base model: an allowed hub name, or one of the tenant's finished jobs with weights."""
    ref = contract.parse_model_ref(config.model)  # the form was checked by JobConfig
    allowed = settings.api.allowed_hub_models
    if ref.kind == "hub" and allowed is not None and ref.name not in allowed:
        raise InvalidRequest(f"model {ref.name!r} is not allowed on this deployment; accepted: "
                             f"{', '.join(sorted(allowed)) or 'no hub model'}, a from-scratch "
                             "architecture, or job:<id> of your finished jobs",
                             field="config.model")
    if ref.kind != "job":
        return
    assert ref.job_id is not None
    source = jobs_repo.get_job(session=session, job_id=ref.job_id, tenant_id=tenant_id)
    has = source is not None and source.status in FINISHED_WITH_MODEL and \
        metrics_repo.get_checkpoint(session=session, job_id=ref.job_id,
                                    name=ref.checkpoint) is not None
    if not has:  # another tenant's job reads exactly like a missing one
        raise InvalidRequest(
            f"{config.model!r}: none of your jobs with id {ref.job_id} has finished "
            f"(completed or early_stopped) with a {ref.checkpoint!r} checkpoint; list yours "
            "with GET /v1/jobs?status=completed", field="config.model")


def _resolve_dataset(*, store: ArtifactStore, tenant_id: str, ref: DatasetRef, field: str,
                     datasets: dict[str, Dataset]) -> Dataset | str:
    """The tenant's uploaded dataset row (from `datasets`, read in one query for every split),
    or the store key named by a uri."""
    if isinstance(ref, DatasetIdRef):
        dataset = datasets.get(ref.dataset_id)
        if dataset is None:
            raise InvalidRequest(f"dataset {ref.dataset_id!r} not found among your datasets; "
                                 "upload one with POST /v1/datasets and pass its id",
                                 field=f"{field}.dataset_id")
        return dataset
    try:
        key = contract.dataset_uri_key(ref.uri, store=store, tenant_id=tenant_id)
    except InvalidDatasetUri as exc:
        raise InvalidRequest(exc.message, field=f"{field}.uri") from None
    if not store.exists(key):
        raise InvalidRequest(f"no object at {ref.uri!r}; upload it first or pass a dataset_id",
                             field=f"{field}.uri")
    return key


def _check_split(split: str, dataset: Dataset, field: str) -> None:
    """Empty splits and one-class train/val splits can only fail (or mislead) on a GPU."""
    stats = dataset.stats or {}
    rows, safe, vulnerable = (int(stats.get(k, 0)) for k in ("rows", "n_safe", "n_vulnerable"))
    if rows == 0:
        raise InvalidRequest(f"dataset {dataset.id} ({dataset.name!r}) has no rows; a "
                             f"{split} split needs examples of both classes", field=field)
    if split in ("train", "val") and (safe == 0 or vulnerable == 0):
        raise InvalidRequest(
            f"dataset {dataset.id} ({dataset.name!r}) has one class only ({safe} safe, "
            f"{vulnerable} vulnerable); the {split} split needs both: class weights, the "
            "collapse guard and F1 are meaningless otherwise", field=field)


class _OverlapCache:
    """(train id, val id) -> shared and distinct validation functions, computed once.

    An uploaded dataset never changes (its id names one stored file and its hashes), so the
    overlap of two datasets is a constant: reading and comparing their hash files (two store
    reads, two sets of up to tens of thousands of items) on every submission would be work
    done again for nothing. Bounded; the oldest pairs are forgotten first.
    """

    def __init__(self, max_entries: int = 1024) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, pair: tuple[str, str]) -> tuple[int, int] | None:
        return self._entries.get(pair)

    def put(self, pair: tuple[str, str], value: tuple[int, int]) -> None:
        with self._lock:
            self._entries[pair] = value
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


_overlaps = _OverlapCache()


def _overlap_counts(store: ArtifactStore, tenant_id: str, train: Dataset,
                    val: Dataset) -> tuple[int, int] | None:
    """(validation functions also in train, distinct validation functions), or None when the
    hashes are not stored (or unreadable: not remembered, the next submission tries again)."""
    pair = (train.id, val.id)
    counts = _overlaps.get(pair)
    if counts is not None:
        return counts
    try:
        a = read_func_hashes(store.get_bytes(contract.dataset_hashes_key(tenant_id, train.id)))
        b = read_func_hashes(store.get_bytes(contract.dataset_hashes_key(tenant_id, val.id)))
    except Exception:  # noqa: BLE001 - no hashes stored (or unreadable): nothing to compare
        log.debug("no function hashes for %s/%s", train.id, val.id, exc_info=True)
        return None
    counts = (len(a & b), len(b))
    _overlaps.put(pair, counts)
    return counts


def _overlap_warning(store: ArtifactStore, tenant_id: str, train: Dataset, val: Dataset,
                     threshold: float) -> str | None:
    """A warning when more than `threshold` of val's functions also occur in train."""
    counts = _overlap_counts(store, tenant_id, train, val)
    if counts is None or not counts[1]:
        return None
    shared, distinct = counts
    fraction = shared / distinct
    if fraction <= threshold:
        return None
    return (f"{shared} of the {distinct} distinct validation functions ({fraction:.1%}) also "
            f"occur in the training split (above {threshold:.1%}): validation scores will be "
            "optimistic; deduplicate with `streamguard data inspect`")


def validate_submission(*, session: Session, store: ArtifactStore, settings: Settings,
                        tenant_id: str, body: JobCreate) -> list[str]:
    """Check what the schema cannot: the base model, the runtime limit and the datasets.

    Returns the warnings to record on the job.

    Raises:
        InvalidRequest: naming the field (`config.model`, `max_runtime_s`, `datasets.<split>`).
    """
    _check_model(session=session, settings=settings, tenant_id=tenant_id, config=body.config)
    limit = settings.worker.max_job_runtime_s
    if body.max_runtime_s is not None and body.max_runtime_s > limit:
        raise InvalidRequest(f"max_runtime_s {body.max_runtime_s} is above this deployment's "
                             f"limit; accepted: 60 to {limit}", field="max_runtime_s")
    seen: dict[str, str] = {}  # dataset id / uri / sha256 -> the split that used it
    resolved: dict[str, Dataset] = {}
    refs = body.datasets.refs()
    datasets = get_datasets(session=session, tenant_id=tenant_id, dataset_ids=[
        ref.dataset_id for ref in refs.values() if isinstance(ref, DatasetIdRef)])
    for split, ref in refs.items():
        field = f"datasets.{split}"
        target = _resolve_dataset(store=store, tenant_id=tenant_id, ref=ref, field=field,
                                  datasets=datasets)
        identities = [target] if isinstance(target, str) else [target.id, target.sha256]
        for identity in identities:
            if identity in seen:
                raise InvalidRequest(
                    f"{field} is the same dataset as datasets.{seen[identity]}; every split "
                    "needs its own data (held-out rows are what make the scores honest)",
                    field=field)
            seen[identity] = split
        if isinstance(target, Dataset):
            _check_split(split, target, field)
            resolved[split] = target
    warnings = []
    if "train" in resolved and "val" in resolved:
        warning = _overlap_warning(store, tenant_id, resolved["train"], resolved["val"],
                                   settings.api.overlap_warn_fraction)
        if warning:
            warnings.append(warning)
    return warnings


# --- use cases -------------------------------------------------------------------------------

def _replay(existing: Job, digest: str, key: str) -> Job:
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was already used by job {existing.id} with a different "
            "body; resend the same body to get that job, or use a new key", field="Idempotency-Key")
    return existing


def submit_job(*, session: Session, store: ArtifactStore, settings: Settings, tenant_id: str,
               body: JobCreate, enqueue: Enqueue,
               idempotency_key: str | None = None) -> tuple[JobRead, bool]:
    """Validate, insert (queued), commit, then enqueue the id. Returns (the job, created).

    A repeated Idempotency-Key with the same body returns the first job (created=False) and
    enqueues nothing; with another body it raises IdempotencyConflict.

    Raises:
        QueueUnavailable: the broker refused the task; the job is removed again (nothing is
            left behind, and a retry with the same Idempotency-Key submits afresh).
    """
    spec = body.model_dump(mode="json")  # the contract's JobSpec, with every default filled in
    digest = request_hash(body, spec)
    # One round trip: the tenant's row locked (the quota below counts under it until commit)
    # and the job already submitted with this key, if any (a replay: no quota applies).
    existing_id = jobs_repo.lock_tenant_row(session=session, tenant_id=tenant_id,
                                            idempotency_key=idempotency_key)
    if existing_id is not None:
        existing = jobs_repo.get_job_or_raise(session=session, job_id=existing_id)
        return read_job(session=session, job=_replay(existing, digest, idempotency_key or "")), \
            False
    check_job_quota(session=session, settings=settings, tenant_id=tenant_id, locked=True)
    warnings = validate_submission(session=session, store=store, settings=settings,
                                   tenant_id=tenant_id, body=body)
    try:
        # No savepoint: the tenant's row is locked (the quota), so the only duplicate key
        # possible is a concurrent submission that committed before this one checked it;
        # that race rolls back below and replays the winner.
        job, submitted = jobs_repo.submit_job(
            session=session, tenant_id=tenant_id, spec=spec, total_epochs=body.config.epochs,
            name=body.name, idempotency_key=idempotency_key, request_hash=digest,
            warnings=warnings, savepoint=False)
    except IntegrityError:
        session.rollback()
        winner = None if idempotency_key is None else jobs_repo.get_job_by_idempotency_key(
            session=session, tenant_id=tenant_id, idempotency_key=idempotency_key)
        if winner is None:
            raise
        return read_job(session=session, job=_replay(winner, digest, idempotency_key or "")), \
            False
    except DuplicateIdempotencyKey as exc:  # (with a savepoint) a concurrent request won
        session.rollback()
        winner = jobs_repo.get_job_or_raise(session=session, job_id=exc.job_id)
        return read_job(session=session, job=_replay(winner, digest, idempotency_key or "")), \
            False
    session.commit()  # commit first: the worker must find the row when the task arrives
    try:
        enqueue(job.id)
    except Exception as exc:
        log.exception("enqueue of job %s failed", job.id)  # the broker's address stays here
        session.rollback()
        jobs_repo.delete_unsent_job(session=session, job_id=job.id)
        session.commit()
        raise QueueUnavailable("the job could not be queued (the broker is unavailable) and was "
                               "not stored; retry the request (the same Idempotency-Key is "
                               "fine)") from exc
    # A new job has exactly the one transition just written: shown without reading it back.
    return read_job(session=session, job=job, transitions=[submitted], spec=body), True


def cancel_job(*, session: Session, job: Job) -> Job:
    """Queued, or running with its worker gone (lease expired): cancelled at once. Running:
    cancel_requested (the worker stops after its current step).

    Raises:
        JobStateConflict: the job already finished (the message names its status).
    """
    jobs_repo.request_cancel(session=session, job=job)
    session.commit()
    return job


def list_jobs(*, connection: Connection, tenant_id: str, limit: int, cursor: str | None,
              status: JobStatus | None) -> JobPage:
    """A page of summaries: one query, of the summary's columns only (no ORM session)."""
    rows, next_cursor = jobs_repo.list_job_summaries(db=connection, tenant_id=tenant_id,
                                                     status=status, limit=limit, cursor=cursor)
    now = utcnow()
    # Plain values, validated in ONE call (pydantic's core builds the 50 summaries and their
    # progress in Rust): a JobSummary(...) per row cost a Python-level model init each.
    return JobPage.model_validate(
        {"items": [_summary_fields(row, now, row.selection_metric) for row in rows],
         "next_cursor": next_cursor})


def read_job(*, session: Session, job: Job,
             transitions: Sequence[JobTransition] | None = None,
             spec: JobSpec | None = None) -> JobRead:
    """The job with every transition (`transitions` when the caller has them, else read;
    `spec`: the job's validated spec when the caller has it, else parsed from the row)."""
    if transitions is None:
        transitions = jobs_repo.list_transitions(session=session, job_id=job.id)
    spec = spec or contract.load_job_spec(job.spec)
    return JobRead(
        **_summary_fields(job, utcnow(), ((job.spec or {}).get("config") or {}).get(
            "selection_metric")),
        datasets=JobDatasets.model_validate(spec.datasets.model_dump()),
        config=spec.config,
        max_runtime_s=spec.max_runtime_s,
        transitions=[TransitionRead.model_validate(t, from_attributes=True)
                     for t in transitions])


def list_steps(*, session: Session, job: Job, after_step: int, limit: int) -> StepMetricPage:
    rows = metrics_repo.list_steps(session=session, job_id=job.id, after_step=after_step,
                                   limit=limit + 1)
    items = [StepMetricRead.model_validate({**row.record, "created_at": row.created_at,
                                            "updated_at": row.updated_at})
             for row in rows[:limit]]
    return StepMetricPage(items=items,
                          next_after_step=rows[limit - 1].step if len(rows) > limit else None)


def list_metrics(*, session: Session, job: Job, offset: int, limit: int) -> EpochMetricPage:
    rows = metrics_repo.list_epochs(session=session, job_id=job.id, offset=offset,
                                    limit=limit + 1)
    more = len(rows) > limit
    items = [EpochMetricRead.from_row(row.record, row.created_at, row.updated_at)
             for row in rows[:limit]]
    return EpochMetricPage(items=items, offset=offset, limit=limit,
                           next_offset=offset + limit if more else None)


# --- helpers -----------------------------------------------------------------------------------

#: A job: the ORM object, or the summary columns of one (same attribute names).
JobFields = Job | JobSummaryRow


def eta_seconds(job: JobFields, now: datetime) -> float | None:
    """Running time per optimizer step so far times the steps left (per completed epoch times
    the epochs left before any step metrics); None unless a worker is running the job right now
    (status running, lease live) and a step or an epoch has been recorded.

    Running time is what the workers accumulated (`run_time_s`, over every attempt) plus the
    time since the current worker's last heartbeat, so waiting in the queue never counts.
    """
    live = job.lease_expires_at is not None and job.lease_expires_at > now
    if job.status != JobStatus.RUNNING or not live:
        return None
    since_beat = (now - job.heartbeat_at).total_seconds() if job.heartbeat_at else 0.0
    ran = job.run_time_s + max(0.0, since_beat)
    if job.current_step > 0 and job.total_steps:
        left = ran / job.current_step * (job.total_steps - job.current_step)
    elif job.current_epoch > 0:
        left = ran / job.current_epoch * (job.total_epochs - job.current_epoch)
    else:
        return None
    return round(max(0.0, left), 1)


def progress(job: JobFields) -> Progress:
    return Progress.model_validate(_progress_fields(job))


def _progress_fields(job: JobFields) -> dict[str, Any]:
    """`progress` as the plain values a Progress validates from."""
    epochs = max(job.total_epochs, 1)
    epoch = min(job.current_epoch, epochs)
    total = job.total_steps or None
    step = min(job.current_step, total) if total else job.current_step
    if job.status == JobStatus.COMPLETED:
        fraction = 1.0
    elif total:
        fraction = max(step / total, epoch / epochs)
    else:
        fraction = epoch / epochs
    return {"epoch": epoch, "epochs": epochs, "step": step, "total_steps": total,
            "percent": round(100.0 * fraction, 1)}


def _summary_fields(job: JobFields, now: datetime,
                    selection_metric: str | None) -> dict[str, Any]:
    test = TestMetrics.from_record(job.test_metrics) if job.test_metrics else None
    return {
        "id": job.id, "name": job.name, "status": job.status,
        "outcome_message": job.outcome_message, "cancel_requested": job.cancel_requested,
        "progress": _progress_fields(job),
        "eta_s": eta_seconds(job, now), "best_epoch": job.best_epoch,
        "best_metric": job.best_metric,
        "selection_metric": selection_metric or "f1", "test_metrics": test,
        "warnings": list(job.warnings or []), "attempts": job.attempts,
        "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "heartbeat_at": job.heartbeat_at,
    }
