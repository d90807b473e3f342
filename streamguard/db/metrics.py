"""Per-epoch metrics, job events (the SSE stream) and checkpoint records.

Worker writes (`upsert_epoch`, `upsert_checkpoint`) are fenced by the lease token. Upserts use
the dialect's `INSERT ... ON CONFLICT DO UPDATE` (PostgreSQL and SQLite spell it the same way),
so a redelivered job that re-evaluates an epoch replaces the row instead of failing.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from streamguard.db.jobs import assert_fresh
from streamguard.db.models import (
    Checkpoint,
    EpochMetric,
    EventKind,
    Job,
    JobEvent,
    StepMetric,
    utcnow,
)
from streamguard.db.session import dialect_name

CHECKPOINT_NAMES = ("best", "last")


def _upsert(session: Session, model: type[Any], values: dict[str, Any],
            keys: list[str]) -> None:
    name = dialect_name(session)
    if name == "postgresql":
        stmt: Any = postgresql.insert(model).values(**values)
    elif name == "sqlite":
        stmt = sqlite.insert(model).values(**values)
    else:
        raise NotImplementedError(f"upsert on {name!r}; supported: postgresql, sqlite")
    updates = {k: stmt.excluded[k] for k in values if k not in keys and k != "created_at"}
    session.execute(stmt.on_conflict_do_update(index_elements=keys, set_=updates))
    # The ORM did not see this write: drop a cached copy of the row, if one is loaded.
    cached = session.identity_map.get(session.identity_key(model, tuple(values[k] for k in keys)))
    if cached is not None:
        session.expire(cached)


def upsert_epoch(*, session: Session, job_id: str, token: int, epoch: int,
                 record: dict[str, Any]) -> None:
    """Fenced insert-or-replace of one epoch's evaluation record."""
    assert_fresh(session=session, job_id=job_id, token=token)
    now = utcnow()
    _upsert(session, EpochMetric, {"job_id": job_id, "epoch": epoch, "record": record,
                                   "created_at": now, "updated_at": now}, ["job_id", "epoch"])


def epoch_recorded(*, session: Session, job_id: str, epoch: int) -> bool:
    """Whether the job has a record of this epoch already."""
    return session.scalar(sa.select(sa.literal(True)).where(
        EpochMetric.job_id == job_id, EpochMetric.epoch == epoch)) is not None


def list_epochs(*, session: Session, job_id: str, offset: int = 0,
                limit: int = 1000) -> list[EpochMetric]:
    return list(session.scalars(sa.select(EpochMetric).where(EpochMetric.job_id == job_id)
                                .order_by(EpochMetric.epoch).offset(offset).limit(limit)))


def upsert_step(*, session: Session, job_id: str, token: int, step: int, epoch: int,
                record: dict[str, Any], total_steps: int | None = None) -> None:
    """Fenced insert-or-replace of one optimizer step's metrics; moves the job's current step."""
    assert_fresh(session=session, job_id=job_id, token=token)
    now = utcnow()
    _upsert(session, StepMetric, {"job_id": job_id, "step": step, "epoch": epoch,
                                  "record": record, "created_at": now, "updated_at": now},
            ["job_id", "step"])
    values: dict[str, Any] = {"current_step": step}
    if total_steps is not None:
        values["total_steps"] = total_steps
    session.execute(sa.update(Job).where(Job.id == job_id).values(**values),
                    execution_options={"synchronize_session": False})
    cached = session.identity_map.get(session.identity_key(Job, (job_id,)))
    if cached is not None:
        session.expire(cached)


def step_recorded(*, session: Session, job_id: str, step: int) -> bool:
    """Whether the job has step metrics at this optimizer step already."""
    return session.scalar(sa.select(sa.literal(True)).where(
        StepMetric.job_id == job_id, StepMetric.step == step)) is not None


def list_steps(*, session: Session, job_id: str, after_step: int = 0,
               limit: int = 1000) -> list[StepMetric]:
    """Step metrics with step > after_step, in step order (keyset paging)."""
    return list(session.scalars(sa.select(StepMetric)
                                .where(StepMetric.job_id == job_id, StepMetric.step > after_step)
                                .order_by(StepMetric.step).limit(limit)))


def add_event(*, session: Session, job_id: str, kind: EventKind | str,
              payload: dict[str, Any]) -> JobEvent:
    """Append an event; flushed, so `.id` (the SSE event id) is set."""
    event = JobEvent(job_id=job_id, kind=EventKind(kind).value, payload=payload)
    session.add(event)
    session.flush()
    return event


def list_events_after(*, session: Session, job_id: str, after_id: int = 0,
                      limit: int = 500) -> list[JobEvent]:
    """Events of the job with id > after_id (the SSE Last-Event-ID), oldest first."""
    return list(session.scalars(sa.select(JobEvent)
                                .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
                                .order_by(JobEvent.id).limit(limit)))


def upsert_checkpoint(*, session: Session, job_id: str, token: int, name: str, epoch: int,
                      key_prefix: str, manifest: dict[str, Any], size_bytes: int,
                      metrics: dict[str, Any]) -> None:
    """Fenced insert-or-replace of the `best` or `last` checkpoint record."""
    if name not in CHECKPOINT_NAMES:
        raise ValueError(f"checkpoint name {name!r}; allowed: {', '.join(CHECKPOINT_NAMES)}")
    assert_fresh(session=session, job_id=job_id, token=token)
    _upsert(session, Checkpoint,
            {"job_id": job_id, "name": name, "epoch": epoch, "key_prefix": key_prefix,
             "manifest": manifest, "size_bytes": size_bytes, "metrics": metrics,
             "updated_at": utcnow()}, ["job_id", "name"])


def list_checkpoints(*, session: Session, job_id: str) -> list[Checkpoint]:
    return list(session.scalars(sa.select(Checkpoint).where(Checkpoint.job_id == job_id)
                                .order_by(Checkpoint.name)))


def get_checkpoint(*, session: Session, job_id: str, name: str) -> Checkpoint | None:
    return session.get(Checkpoint, (job_id, name))
