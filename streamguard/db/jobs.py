"""Job repository: submission, paging, the status state machine, and leases with fencing.

State machine (every change is a `job_transitions` row plus a `status` event)::

    queued  -> running | cancelled | failed
    running -> running (a lease taken over) | queued (preempted, or re-queued by the sweeper)
               | completed | early_stopped | collapsed | non_finite_loss | cancelled
               | timed_out | failed
    terminal -> (nothing)

Workers own a job through a lease. `claim_job` bumps `fencing_token`; every worker write passes
the token and goes through `assert_fresh`, so a worker whose lease was taken over (a broker
redelivery, a GC pause past the lease) fails with `StaleLease` instead of overwriting the new
owner's progress. A job whose lease expired is an orphan: `find_orphans` lists them and
`requeue_orphan` re-queues one (or fails it once `max_attempts` workers were lost on it).
All functions take keyword arguments and leave committing to the caller.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from streamguard.db.models import (
    TERMINAL_STATUSES,
    EventKind,
    Job,
    JobEvent,
    JobStatus,
    JobTransition,
    Tenant,
    UtcDateTime,
    new_id,
    utcnow,
)
from streamguard.db.session import dialect_name, execute_columns
from streamguard.errors import JobNotFound, JobStateConflict, StreamGuardError

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    # running -> queued: preempted (the worker shut down) or re-queued after its worker was lost;
    # running -> running: the guard rolled back to the best checkpoint (worker/sinks.py)
    JobStatus.RUNNING: TERMINAL_STATUSES | {JobStatus.QUEUED, JobStatus.RUNNING},
    **{status: frozenset() for status in TERMINAL_STATUSES},
}

#: Every transition that ends an attempt whose worker was lost starts with this; counting them
#: is how many attempts were lost (preempted attempts do not count against `max_attempts`).
LEASE_EXPIRED = "lease expired"
PREEMPTED = "preempted: worker shutting down"

#: Sends the job's TRAIN_TASK again (the worker passes it in: this layer knows no broker).
Enqueue = Callable[[str], None]


class StaleLease(StreamGuardError):
    """The caller's fencing token is no longer the job's: another worker owns it now."""

    code = "stale_lease"


class InvalidCursor(StreamGuardError):
    """A paging cursor that this API did not hand out."""

    code = "invalid_cursor"


class DuplicateIdempotencyKey(StreamGuardError):
    """The tenant already submitted a job with this Idempotency-Key; `job_id` is that job."""

    code = "conflict"

    def __init__(self, job_id: str, idempotency_key: str) -> None:
        super().__init__(f"Idempotency-Key {idempotency_key!r} was already used by job {job_id}",
                         field="idempotency_key")
        self.job_id = job_id


@dataclass(frozen=True)
class HeartbeatResult:
    ok: bool  # False: the lease is lost (stale token or job no longer running); stop now
    cancel_requested: bool


# --- cursors ---------------------------------------------------------------------------------

def encode_cursor(created_at: datetime, row_id: str) -> str:
    """Opaque cursor for keyset paging on (created_at, id), newest first."""
    raw = json.dumps([created_at.isoformat(), row_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSOR_MAX_LEN = 512
_CURSOR_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
_ROW_ID = re.compile(r"^[0-9a-f]{32}$")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) inside a cursor this API handed out; InvalidCursor for anything else
    (a crafted one included: odd characters, a stamp out of range, an id of another shape)."""
    try:
        if len(cursor) > CURSOR_MAX_LEN or not _CURSOR_CHARS.match(cursor):
            raise ValueError("shape")
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        stamp, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(stamp)
        if created_at.tzinfo is None or not isinstance(row_id, str) \
                or not _ROW_ID.match(row_id):
            raise ValueError(cursor)
        created_at = created_at.astimezone(UTC)  # OverflowError near datetime's limits
        if not 1970 <= created_at.year <= 9998:
            raise ValueError(cursor)
    except (binascii.Error, ValueError, TypeError, OverflowError, UnicodeError,
            RecursionError) as exc:
        raise InvalidCursor("invalid cursor: pass the next_cursor of the previous page, or omit "
                            "it for the first page", field="cursor") from exc
    return created_at, row_id


# --- submission and reads --------------------------------------------------------------------

def _record(session: Session, *, job_id: str, from_status: str | None, to_status: str,
            reason: str, **extra: Any) -> JobTransition:
    transition = JobTransition(job_id=job_id, from_status=from_status, to_status=to_status,
                               reason=reason)
    session.add(transition)
    session.add(JobEvent(job_id=job_id, kind=EventKind.STATUS.value,
                         payload={"status": to_status, "from": from_status, "reason": reason,
                                  **extra}))
    session.flush()
    return transition


def _expire(session: Session, job_id: str) -> None:
    """Drop cached attributes of a Job changed behind the ORM's back by a Core UPDATE."""
    job = session.identity_map.get(session.identity_key(Job, job_id))
    if job is not None:
        session.expire(job)


def create_job(*, session: Session, tenant_id: str, spec: dict[str, Any], total_epochs: int,
               name: str | None = None, idempotency_key: str | None = None,
               request_hash: str | None = None, warnings: list[str] | None = None) -> Job:
    """Insert a queued job. Raises DuplicateIdempotencyKey (session stays usable) on reuse."""
    return submit_job(session=session, tenant_id=tenant_id, spec=spec,
                      total_epochs=total_epochs, name=name, idempotency_key=idempotency_key,
                      request_hash=request_hash, warnings=warnings)[0]


def submit_job(*, session: Session, tenant_id: str, spec: dict[str, Any], total_epochs: int,
               name: str | None = None, idempotency_key: str | None = None,
               request_hash: str | None = None, warnings: list[str] | None = None,
               savepoint: bool = True) -> tuple[Job, JobTransition]:
    """Insert a queued job; returns it with its first transition (`submitted`), so a caller can
    show the new job without reading it back.

    With `savepoint` (and an idempotency key), the insert runs in a SAVEPOINT: reusing a key
    raises DuplicateIdempotencyKey and the session stays usable. Without it (two round trips
    fewer), reuse raises sqlalchemy's IntegrityError and the transaction must be rolled back;
    the API's submit does that, then replays the job that won. Without it on PostgreSQL, the
    job, its transition and its status event are written by ONE statement (`_insert_submitted`).
    """
    job = Job(id=new_id(), tenant_id=tenant_id, spec=spec, total_epochs=total_epochs,
              name=name, idempotency_key=idempotency_key, request_hash=request_hash,
              status=JobStatus.QUEUED.value, warnings=list(warnings or []))
    if not savepoint and dialect_name(session) == "postgresql":
        return _insert_submitted(session, job)
    if idempotency_key is None or not savepoint:  # nothing a savepoint would need to undo
        session.add(job)  # inserted by the flush of its transition and event below (one flush)
    else:
        try:
            with session.begin_nested():  # a savepoint: a duplicate does not doom the transaction
                session.add(job)
                session.flush()
        except IntegrityError:
            existing = get_job_by_idempotency_key(session=session, tenant_id=tenant_id,
                                                  idempotency_key=idempotency_key)
            if existing is None:
                raise
            raise DuplicateIdempotencyKey(existing.id, idempotency_key) from None
    transition = _record(session, job_id=job.id, from_status=None,
                         to_status=JobStatus.QUEUED.value, reason="submitted")
    return job, transition


def _with_defaults(table: sa.Table, values: dict[str, Any]) -> dict[str, Any]:
    """`values` plus the Python-side default of every other column that has one (what the ORM
    would insert; columns without a default are left out: NULL, as the ORM leaves them)."""
    row = dict(values)
    for column in table.columns:
        default = column.default
        if column.key in row or default is None:
            continue
        if isinstance(default, ScalarElementColumnDefault):
            row[column.key] = default.arg
        elif isinstance(default, CallableColumnDefault):
            row[column.key] = default.arg(None)  # type: ignore[arg-type]  # wrapped: takes a context
        else:
            raise TypeError(f"{table.name}.{column.key}: a {type(default).__name__} default is "
                            "not supported here; give the value explicitly")
    return row


@functools.lru_cache(maxsize=4)
def _submitted_insert(job_keys: tuple[str, ...], transition_keys: tuple[str, ...],
                      event_keys: tuple[str, ...]) -> sa.Insert:
    """`_insert_submitted`'s statement for these columns, built once, its values bound as
    `j_<column>`, `t_<column>` and `e_<column>` (a statement reused keeps its cache key)."""
    jobs_table, transitions_table, events_table = (
        cast(sa.Table, model.__table__) for model in (Job, JobTransition, JobEvent))

    def bound(table: sa.Table, prefix: str, keys: tuple[str, ...]) -> dict[str, Any]:
        return {key: sa.bindparam(f"{prefix}_{key}", type_=table.c[key].type) for key in keys}

    jobs_cte = (sa.insert(jobs_table).values(bound(jobs_table, "j", job_keys))
                .returning(jobs_table.c.id))
    events_cte = (sa.insert(events_table).values(bound(events_table, "e", event_keys))
                  .returning(events_table.c.id))
    return (sa.insert(transitions_table).values(bound(transitions_table, "t", transition_keys))
            .returning(transitions_table.c.id)
            .add_cte(jobs_cte.cte("new_job"), events_cte.cte("new_event")))


def _insert_submitted(session: Session, job: Job) -> tuple[Job, JobTransition]:
    """PostgreSQL: the job row, its `submitted` transition and its status event in ONE
    statement (data-modifying CTEs; the foreign keys are checked at its end), instead of three
    INSERTs through the unit of work. The returned objects are persistent without a read-back:
    every value was set here."""
    now = utcnow()
    jobs_table, transitions_table, events_table = (
        cast(sa.Table, model.__table__) for model in (Job, JobTransition, JobEvent))
    job_values = _with_defaults(jobs_table, {
        key: getattr(job, key) for key in ("id", "tenant_id", "spec", "total_epochs", "name",
                                           "idempotency_key", "request_hash", "status",
                                           "warnings")} | {"created_at": now})
    reason, status = "submitted", JobStatus.QUEUED.value
    transition_values = {"job_id": job.id, "from_status": None, "to_status": status,
                         "reason": reason, "created_at": now}
    event_values = {"job_id": job.id, "kind": EventKind.STATUS.value, "created_at": now,
                    "payload": {"status": status, "from": None, "reason": reason}}
    stmt = _submitted_insert(tuple(job_values), tuple(transition_values), tuple(event_values))
    params = {f"{prefix}_{key}": value
              for prefix, values in (("j", job_values), ("t", transition_values),
                                     ("e", event_values))
              for key, value in values.items()}
    transition_id = execute_columns(session, stmt, params).scalar_one()
    for column in jobs_table.columns:  # the columns left out are NULL: loaded as None
        setattr(job, column.key, job_values.get(column.key))
    transition = JobTransition(id=transition_id, **transition_values)
    for obj in (job, transition):
        make_transient_to_detached(obj)  # persistent as loaded: no read-back, no flush
        session.add(obj)
    return job, transition


def delete_unsent_job(*, session: Session, job_id: str) -> None:
    """Remove a queued job whose task never reached the broker (its events and transitions go
    with it, ON DELETE CASCADE): the client was told it failed, so nothing is left behind and a
    retry with the same Idempotency-Key submits afresh."""
    session.execute(sa.delete(Job).where(Job.id == job_id,
                                         Job.status == JobStatus.QUEUED.value),
                    execution_options={"synchronize_session": False})
    _expire(session, job_id)


def get_job(*, session: Session, job_id: str, tenant_id: str | None = None) -> Job | None:
    """The job, or None (also None for another tenant's job when `tenant_id` is given)."""
    job = session.get(Job, job_id)
    if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
        return None
    return job


def get_job_or_raise(*, session: Session, job_id: str, tenant_id: str | None = None) -> Job:
    job = get_job(session=session, job_id=job_id, tenant_id=tenant_id)
    if job is None:
        raise JobNotFound(f"job {job_id!r} not found; list yours with GET /v1/jobs",
                          field="job_id")
    return job


def get_job_by_idempotency_key(*, session: Session, tenant_id: str,
                               idempotency_key: str) -> Job | None:
    return session.scalars(sa.select(Job).where(
        Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)).one_or_none()


def _page(stmt: sa.Select[Any], *, status: bool, cursor: bool) -> sa.Select[Any]:
    """`stmt` narrowed to a tenant's jobs (of a status), after a cursor, newest first, with the
    values as bind parameters (`_page_params`): `limit + 1` rows, the extra one saying whether
    there is a next page."""
    stmt = stmt.where(Job.tenant_id == sa.bindparam("tenant_id"))
    if status:
        stmt = stmt.where(Job.status == sa.bindparam("status"))
    if cursor:
        after = sa.bindparam("after", type_=Job.created_at.type)
        last_id = sa.bindparam("last_id", type_=Job.id.type)
        stmt = stmt.where(sa.or_(Job.created_at < after,
                                 sa.and_(Job.created_at == after, Job.id < last_id)))
    return stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(sa.bindparam("rows"))


def _page_params(*, tenant_id: str, status: JobStatus | str | None, cursor: str | None,
                 limit: int) -> dict[str, Any]:
    params: dict[str, Any] = {"tenant_id": tenant_id, "rows": limit + 1}
    if status is not None:
        params["status"] = JobStatus(status).value
    if cursor is not None:
        params["after"], params["last_id"] = decode_cursor(cursor)
    return params


def _pages(stmt: sa.Select[Any]) -> dict[tuple[bool, bool], sa.Select[Any]]:
    """The four page statements of `stmt` (with or without a status filter and a cursor),
    built once: a statement reused keeps its compiled form's cache key, where one built per
    request costs the building and the key again (a tenth of a small page's CPU)."""
    return {(status, cursor): _page(stmt, status=status, cursor=cursor)
            for status in (False, True) for cursor in (False, True)}


def _cut(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


_JOB_PAGES = _pages(sa.select(Job))


def list_jobs(*, session: Session, tenant_id: str, status: JobStatus | str | None = None,
              limit: int, cursor: str | None = None) -> tuple[list[Job], str | None]:
    """A page of the tenant's jobs, newest first; returns (jobs, next_cursor or None)."""
    stmt = _JOB_PAGES[status is not None, cursor is not None]
    params = _page_params(tenant_id=tenant_id, status=status, cursor=cursor, limit=limit)
    return _cut(list(session.scalars(stmt, params)), limit)


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, 4.5 us
# against 0.6 us for these 21 fields, 51 times per page.
@dataclass(slots=True)
class JobSummaryRow:
    """What a job summary shows (`GET /v1/jobs`), attributes named like the Job's. Read as
    plain columns: the spec document (the largest column, a JSON parse per row) stays in the
    database; only its selection metric is read, by a JSON path."""

    id: str
    name: str | None
    status: str
    outcome_message: str | None
    cancel_requested: bool
    warnings: list[str]
    attempts: int
    run_time_s: float
    current_epoch: int
    total_epochs: int
    current_step: int
    total_steps: int | None
    best_epoch: int | None
    best_metric: float | None
    test_metrics: dict[str, Any] | None
    lease_expires_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    selection_metric: str | None


#: Built once: coercing 21 column expressions costs more than running the query.
_SUMMARY_SELECT = sa.select(
    *(getattr(Job, name) for name in JobSummaryRow.__dataclass_fields__
      if name != "selection_metric"),
    Job.spec[("config", "selection_metric")].as_string().label("selection_metric"),
)
_SUMMARY_PAGES = _pages(_SUMMARY_SELECT)


def list_job_summaries(*, db: Session | Connection, tenant_id: str,
                       status: JobStatus | str | None = None, limit: int,
                       cursor: str | None = None) -> tuple[list[JobSummaryRow], str | None]:
    """`list_jobs` as JobSummaryRow, in ONE query of the summary's columns; returns
    (rows, next_cursor or None). `db`: a session, or a plain connection (no ORM needed)."""
    stmt = _SUMMARY_PAGES[status is not None, cursor is not None]
    params = _page_params(tenant_id=tenant_id, status=status, cursor=cursor, limit=limit)
    rows = execute_columns(db, stmt, params)
    return _cut([JobSummaryRow(*row) for row in rows], limit)


def count_all_jobs_by_status(*, session: Session) -> dict[str, int]:
    """Jobs of every tenant per status (one GROUP BY on the indexed `status` column; the
    API's /metrics runs it at each scrape)."""
    rows = session.execute(sa.select(Job.status, sa.func.count()).group_by(Job.status))
    return {str(status): int(count) for status, count in rows}


def list_transitions(*, session: Session, job_id: str) -> list[JobTransition]:
    return list(session.scalars(sa.select(JobTransition).where(JobTransition.job_id == job_id)
                                .order_by(JobTransition.id)))


# --- state machine ---------------------------------------------------------------------------

def transition(*, session: Session, job: Job, to_status: JobStatus | str, reason: str) -> Job:
    """Move `job` to `to_status` (compare-and-set on its current status).

    Raises:
        JobStateConflict: the move is not allowed from the current status (the message lists
            the allowed targets), or the status changed concurrently.
    """
    current, target = JobStatus(job.status), JobStatus(to_status)
    allowed = ALLOWED_TRANSITIONS[current]
    if target not in allowed:
        options = ", ".join(sorted(allowed)) or "none: the job is finished"
        raise JobStateConflict(f"job {job.id} is {current}; cannot move to {target} "
                               f"(allowed: {options})", field="status")
    now = utcnow()
    values: dict[str, Any] = {"status": target.value}
    if target == JobStatus.RUNNING:
        values["started_at"] = job.started_at or now
    if target in TERMINAL_STATUSES or target == JobStatus.QUEUED:
        values |= {"lease_owner": None, "lease_expires_at": None}
    if target in TERMINAL_STATUSES:
        values |= {"finished_at": now, "outcome_message": reason}
    result = session.execute(sa.update(Job).where(Job.id == job.id, Job.status == current.value)
                             .values(**values), execution_options={"synchronize_session": False})
    session.refresh(job)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise JobStateConflict(f"job {job.id} changed concurrently: it is now {job.status}; "
                               f"retry if {target} is still wanted", field="status")
    _record(session, job_id=job.id, from_status=current.value, to_status=target.value,
            reason=reason)
    return job


def request_cancel(*, session: Session, job: Job, now: datetime | None = None) -> Job:
    """Cancel a queued job at once, and a running one whose worker is gone (lease expired); flag
    a running one with a live lease (its worker stops at the next check).

    Raises:
        JobStateConflict: the job already finished.
    """
    result = session.execute(
        sa.update(Job).where(Job.id == job.id, Job.status.not_in(TERMINAL_STATUSES))
        .values(cancel_requested=True), execution_options={"synchronize_session": False})
    session.refresh(job)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise JobStateConflict(f"job {job.id} is {job.status}; only queued or running jobs can "
                               "be cancelled", field="status")
    reason = None
    if job.status == JobStatus.QUEUED:
        reason = "cancelled before start"
    elif _orphaned(job, now or utcnow()):  # nobody would ever see the flag
        reason = "cancelled on request; no worker was running it (its lease had expired)"
    if reason is not None:
        try:
            transition(session=session, job=job, to_status=JobStatus.CANCELLED, reason=reason)
        except JobStateConflict:
            pass  # a worker claimed it meanwhile; it sees cancel_requested and stops
    return job


# --- leases and fencing ----------------------------------------------------------------------

def _lock_job(session: Session, job_id: str, *, skip_locked: bool = False) -> bool:
    """Hold the job's row (PostgreSQL: FOR UPDATE) or the database's write lock (SQLite) until
    the caller commits, so what is read next is the latest committed state and stays so.
    False when there is no such job, or (`skip_locked`, PostgreSQL) another transaction holds
    the row.

    On PostgreSQL this also waits for a transaction that is re-queueing the job right now
    (its UPDATE would otherwise be invisible to ours, and the claim would see a live lease).
    SQLite takes its write lock with a no-op UPDATE *first*: a read before the first write
    would pin a snapshot that the write then refuses ("database is locked") if another
    writer committed in between.
    """
    if dialect_name(session) == "sqlite":
        result = session.execute(sa.update(Job).where(Job.id == job_id)
                                 .values(fencing_token=Job.fencing_token),
                                 execution_options={"synchronize_session": False})
        return bool(result.rowcount)  # type: ignore[attr-defined]
    return session.execute(sa.select(Job.id).where(Job.id == job_id)
                           .with_for_update(skip_locked=skip_locked)).first() is not None


def _load_locked(session: Session, job_id: str, *, skip_locked: bool = False) -> Job | None:
    if not _lock_job(session, job_id, skip_locked=skip_locked):
        return None
    return session.get(Job, job_id, populate_existing=True)


def _orphaned(job: Job, now: datetime) -> bool:
    """Running with no live lease: its worker died, hung, or lost the database."""
    return job.status == JobStatus.RUNNING and (job.lease_expires_at is None
                                                or job.lease_expires_at < now)


def lost_attempts(*, session: Session, job_id: str) -> int:
    """Attempts of the job that ended with their worker lost (lease expired)."""
    return int(session.scalar(
        sa.select(sa.func.count()).select_from(JobTransition).where(
            JobTransition.job_id == job_id,
            JobTransition.from_status == JobStatus.RUNNING.value,
            JobTransition.reason.startswith(LEASE_EXPIRED))) or 0)


def _settle_orphan(session: Session, job: Job, *, max_attempts: int | None,
                   requeue: bool) -> JobStatus | None:
    """End an orphan that must not run again: cancelled (asked for) or failed (attempts used
    up). Otherwise, with `requeue`, move it back to `queued`. Returns the new status or None."""
    if job.cancel_requested:
        transition(session=session, job=job, to_status=JobStatus.CANCELLED,
                   reason="cancelled on request; its worker was lost before it could stop")
        return JobStatus.CANCELLED
    lost = lost_attempts(session=session, job_id=job.id) + 1  # this attempt's worker too
    if max_attempts is not None and lost >= max_attempts:
        transition(session=session, job=job, to_status=JobStatus.FAILED, reason=(
            f"failed after {job.attempts} attempt(s): the worker running it was lost {lost} "
            f"time(s) (worker.max_attempts = {max_attempts}); the job may be crashing its "
            "worker (out of memory, a device fault): see the workers' logs"))
        return JobStatus.FAILED
    if not requeue:
        return None
    transition(session=session, job=job, to_status=JobStatus.QUEUED, reason=(
        f"{LEASE_EXPIRED}: the worker of attempt {job.attempts} stopped heartbeating; "
        "re-queued"))
    return JobStatus.QUEUED


def find_orphans(*, session: Session, now: datetime | None = None,
                 limit: int = 100) -> list[str]:
    """Ids of running jobs whose lease expired (claimed and never heartbeated, too), oldest
    expiry first."""
    now = now or utcnow()
    return list(session.scalars(
        sa.select(Job.id).where(Job.status == JobStatus.RUNNING.value,
                                sa.or_(Job.lease_expires_at.is_(None),
                                       Job.lease_expires_at < now))
        .order_by(Job.lease_expires_at).limit(limit)))


def requeue_orphan(*, session: Session, job_id: str, enqueue: Enqueue, max_attempts: int,
                   now: datetime | None = None) -> JobStatus | None:
    """Re-queue a running job whose lease expired and send its task again.

    Safe to run in every worker at once: the job is re-read under a lock and only an orphan is
    touched, so one sweeper acts and the others find nothing (on PostgreSQL a row another
    transaction holds is skipped, not waited for: a worker frozen mid-transaction must not
    stall the sweep; the next sweep tries again). `enqueue` runs inside the
    transaction: if the broker refuses, the caller's rollback leaves the job an orphan for the
    next sweep (a committed `queued` job with no message would wait forever). A worker that
    receives the task before the commit waits for it in `claim_job` (`_lock_job`).

    Returns `queued`, `failed` (the `max_attempts`-th lost worker), `cancelled` (cancel was
    requested) or None (not an orphan any more).
    """
    job = _load_locked(session, job_id, skip_locked=True)
    if job is None or not _orphaned(job, now or utcnow()):
        return None
    status = _settle_orphan(session, job, max_attempts=max_attempts, requeue=True)
    if status == JobStatus.QUEUED:
        enqueue(job_id)
    return status


def claim_job(*, session: Session, job_id: str, worker_id: str, lease_s: int,
              max_attempts: int | None = None, now: datetime | None = None) -> int | None:
    """Take the lease of a queued job, or of a running job whose lease expired.

    The job is read under a lock and taken with a conditional UPDATE, so two workers can never
    both win. An orphan whose lost attempts reach `max_attempts` (or whose cancel was
    requested) is ended instead. Returns the new fencing token, or None when the job is
    finished, cancel was requested, or another lease is live.
    """
    now = now or utcnow()
    job = _load_locked(session, job_id)
    if job is None:
        return None
    if job.status == JobStatus.QUEUED and not job.cancel_requested:
        from_status, reason = JobStatus.QUEUED, "claimed by a worker"
    elif _orphaned(job, now):
        if _settle_orphan(session, job, max_attempts=max_attempts, requeue=False) is not None:
            return None  # cancelled (as asked) or failed (attempts used up)
        from_status, reason = JobStatus.RUNNING, f"{LEASE_EXPIRED}; reclaimed by another worker"
    else:
        return None
    values = {
        "status": JobStatus.RUNNING.value,
        "fencing_token": Job.fencing_token + 1,
        "attempts": Job.attempts + 1,
        "lease_owner": worker_id,
        "lease_expires_at": now + timedelta(seconds=lease_s),
        "heartbeat_at": now,
        "started_at": sa.func.coalesce(Job.started_at, sa.literal(now, UtcDateTime())),
    }
    row = session.execute(
        sa.update(Job).where(Job.id == job_id, Job.status == from_status.value,
                             Job.fencing_token == job.fencing_token)
        .values(**values).returning(Job.fencing_token, Job.attempts),
        execution_options={"synchronize_session": False}).first()
    if row is None:
        return None
    _expire(session, job_id)
    _record(session, job_id=job_id, from_status=from_status.value,
            to_status=JobStatus.RUNNING.value, reason=f"{reason} (attempt {row.attempts})",
            attempt=row.attempts)  # the worker's host stays in lease_owner, not shown
    return int(row.fencing_token)


def heartbeat(*, session: Session, job_id: str, token: int, lease_s: int,
              run_time_s: float = 0.0, now: datetime | None = None) -> HeartbeatResult:
    """Extend the lease if `token` still owns the running job, adding `run_time_s` (the running
    time since the last beat) to the job's; reports cancel requests."""
    now = now or utcnow()
    row = session.execute(
        sa.update(Job).where(Job.id == job_id, Job.fencing_token == token,
                             Job.status == JobStatus.RUNNING.value)
        .values(lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now,
                run_time_s=Job.run_time_s + max(0.0, run_time_s))
        .returning(Job.cancel_requested),
        execution_options={"synchronize_session": False}).first()
    _expire(session, job_id)
    if row is None:
        cancel = session.scalar(sa.select(Job.cancel_requested).where(Job.id == job_id))
        return HeartbeatResult(ok=False, cancel_requested=bool(cancel))
    return HeartbeatResult(ok=True, cancel_requested=bool(row.cancel_requested))


def assert_fresh(*, session: Session, job_id: str, token: int) -> None:
    """Guard for every worker write: `token` must still own the running job.

    On PostgreSQL the job row stays locked (FOR UPDATE) until the caller's commit, so a
    concurrent claim cannot slip in between this check and the write. SQLite serialises
    writers; a writer with a stale snapshot fails with "database is locked" instead.

    Raises:
        JobNotFound: no such job.
        StaleLease: the token is stale or the job is no longer running.
    """
    row = session.execute(sa.select(Job.fencing_token, Job.status)
                          .where(Job.id == job_id).with_for_update()).first()
    if row is None:
        raise JobNotFound(f"job {job_id!r} not found", field="job_id")
    if row.fencing_token != token or row.status != JobStatus.RUNNING.value:
        raise StaleLease(f"job {job_id}: lease token {token} is stale (current token "
                         f"{row.fencing_token}, status {row.status}); stop without writing")


def record_progress(*, session: Session, job_id: str, token: int, current_epoch: int,
                    best_epoch: int | None = None, best_metric: float | None = None) -> None:
    """Fenced update of the job's progress summary."""
    assert_fresh(session=session, job_id=job_id, token=token)
    values: dict[str, Any] = {"current_epoch": current_epoch}
    if best_epoch is not None:
        values |= {"best_epoch": best_epoch, "best_metric": best_metric}
    session.execute(sa.update(Job).where(Job.id == job_id).values(**values),
                    execution_options={"synchronize_session": False})
    _expire(session, job_id)


def finish_job(*, session: Session, job_id: str, token: int, status: JobStatus | str,
               message: str, best_epoch: int | None = None, best_metric: float | None = None,
               test_metrics: dict[str, Any] | None = None, run_time_s: float = 0.0) -> Job:
    """Fenced move of a running job to a terminal status, releasing the lease; `run_time_s` is
    the running time since the last heartbeat."""
    target = JobStatus(status)
    if target not in TERMINAL_STATUSES:
        raise JobStateConflict(f"finish_job needs a terminal status, got {target} (allowed: "
                               f"{', '.join(sorted(TERMINAL_STATUSES))})", field="status")
    job = _fenced_job(session, job_id, token, run_time_s)
    if best_epoch is not None:
        job.best_epoch, job.best_metric = best_epoch, best_metric
    if test_metrics is not None:
        job.test_metrics = test_metrics
    session.flush()
    return transition(session=session, job=job, to_status=target, reason=message)


def _fenced_job(session: Session, job_id: str, token: int, run_time_s: float) -> Job:
    assert_fresh(session=session, job_id=job_id, token=token)
    if run_time_s > 0:
        session.execute(sa.update(Job).where(Job.id == job_id)
                        .values(run_time_s=Job.run_time_s + run_time_s),
                        execution_options={"synchronize_session": False})
    job = get_job_or_raise(session=session, job_id=job_id)
    session.refresh(job)
    return job


def release_job(*, session: Session, job_id: str, token: int, enqueue: Enqueue,
                reason: str = PREEMPTED, run_time_s: float = 0.0) -> Job:
    """Fenced move of a running job back to `queued` (its worker is shutting down after saving
    `last`), then its task sent again; `enqueue` runs inside the transaction (see
    `requeue_orphan`). A preempted attempt does not count against `max_attempts`."""
    job = _fenced_job(session, job_id, token, run_time_s)
    transition(session=session, job=job, to_status=JobStatus.QUEUED, reason=reason)
    enqueue(job_id)
    return job


def lock_tenant_row(*, session: Session, tenant_id: str,
                    idempotency_key: str | None = None) -> str | None:
    """Lock the tenant's row until commit or rollback (`FOR NO KEY UPDATE` on PostgreSQL: other
    tenants and dataset uploads are not blocked; SQLite's write lock), so that submissions of
    one tenant count their quota one after the other. In the same round trip, returns the id of
    the tenant's job submitted with `idempotency_key` (None: no such job, or no key), as this
    statement's snapshot saw it: a job committed while it waited for the lock is caught by the
    unique constraint instead.
    """
    params = {"tenant_id": tenant_id, "key": idempotency_key}
    row = execute_columns(session, _LOCK_TENANT[idempotency_key is not None], params).first()
    return None if row is None or row[1] is None else str(row[1])


def _lock_tenant(with_key: bool) -> sa.Select[Any]:
    existing: Any = sa.null()
    if with_key:
        existing = (sa.select(Job.id).where(Job.tenant_id == sa.bindparam("tenant_id"),
                                            Job.idempotency_key == sa.bindparam("key"))
                    .scalar_subquery())
    return (sa.select(Tenant.id, existing).where(Tenant.id == sa.bindparam("tenant_id"))
            .with_for_update(key_share=True, of=Tenant))


#: Built once (with and without an Idempotency-Key), like the job list's page statements.
_LOCK_TENANT = {with_key: _lock_tenant(with_key) for with_key in (False, True)}


def count_jobs_by_status(*, session: Session, tenant_id: str,
                         statuses: Collection[JobStatus] | None = None,
                         lock_tenant: bool = False) -> dict[str, int]:
    """The tenant's jobs per status (`{"queued": 3, "running": 1}`; absent statuses are absent).

    With `lock_tenant`, the tenant's row is locked first (`FOR NO KEY UPDATE` on PostgreSQL,
    held until commit or rollback), so concurrent submissions of one tenant count one after
    the other and a quota cannot be overshot; other tenants and dataset uploads are not blocked.
    """
    if lock_tenant:
        lock_tenant_row(session=session, tenant_id=tenant_id)
    params: dict[str, Any] = {"tenant_id": tenant_id}
    if statuses is not None:
        params["statuses"] = [JobStatus(s).value for s in statuses]
    rows = execute_columns(session, _COUNT_BY_STATUS[statuses is not None], params).all()
    return {str(status): int(count) for status, count in rows}


def _count_by_status(some: bool) -> sa.Select[str, int]:
    query = (sa.select(Job.status, sa.func.count())
             .where(Job.tenant_id == sa.bindparam("tenant_id")))
    if some:
        query = query.where(Job.status.in_(sa.bindparam("statuses", expanding=True)))
    return query.group_by(Job.status)


_COUNT_BY_STATUS = {some: _count_by_status(some) for some in (False, True)}
