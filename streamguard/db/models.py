"""SQLAlchemy 2 declarative models shared by the API and the workers.

Portable to PostgreSQL and SQLite: string UUID keys (`uuid4().hex`), `sa.JSON` documents, and
timestamps that are always timezone-aware UTC in Python (`UtcDateTime`; SQLite stores them
naive). Migrations in `migrations/versions/` are generated from this metadata, and
`tests/integration/test_db.py` checks that the two agree.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from streamguard.contract import TERMINAL_STATUSES, EventKind, JobStatus

__all__ = ["TERMINAL_STATUSES", "EventKind", "JobStatus"]  # re-exported: the contract's

# Stable constraint names on every backend, so migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    """A fresh primary key: 32 lowercase hex characters."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UtcDateTime(sa.TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that refuses naive input and always returns aware UTC.

    SQLite has no time zones: values are stored as UTC text and re-tagged as UTC on load, so
    ordering and equality in SQL (cursor paging, lease expiry) behave as on PostgreSQL.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware (UTC) value")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect  # noqa: ARG002
    ) -> datetime | None:
        if value is None or value.tzinfo is UTC:  # PostgreSQL sessions run in UTC
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: sa.JSON}


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(sa.String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key. Only the SHA-256 of the key is stored; `prefix` narrows the lookup."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(sa.String(12), index=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Dataset(Base):
    __tablename__ = "datasets"
    __table_args__ = (sa.Index("ix_datasets_tenant_created", "tenant_id", "created_at", "id"),)

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(sa.String(200))
    storage_key: Mapped[str] = mapped_column(sa.String(1024))
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    stats: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    """One training job: its spec, lifecycle, lease (with fencing token) and progress summary."""

    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "idempotency_key"),
        sa.Index("ix_jobs_tenant_created", "tenant_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    status: Mapped[str] = mapped_column(sa.String(32), index=True, default=JobStatus.QUEUED.value)
    spec: Mapped[dict[str, Any]]
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    request_hash: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    outcome_message: Mapped[str | None] = mapped_column(sa.Text, default=None)
    #: Problems found at submit that did not stop it (train/val overlap, ...).
    warnings: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    lease_owner: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    fencing_token: Mapped[int] = mapped_column(default=0)
    attempts: Mapped[int] = mapped_column(default=0)
    #: Seconds spent running, over every attempt (the runtime limit counts this, not wall time).
    run_time_s: Mapped[float] = mapped_column(sa.Float, default=0.0)
    current_epoch: Mapped[int] = mapped_column(default=0)
    total_epochs: Mapped[int]
    #: The optimizer step of the latest step metrics, and the run's total (known once running).
    current_step: Mapped[int] = mapped_column(default=0)
    total_steps: Mapped[int | None] = mapped_column(default=None)
    best_epoch: Mapped[int | None] = mapped_column(default=None)
    best_metric: Mapped[float | None] = mapped_column(sa.Float, default=None)
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class JobTransition(Base):
    """Audit log of status changes (including lease takeovers, running → running)."""

    __tablename__ = "job_transitions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    from_status: Mapped[str | None] = mapped_column(sa.String(32))
    to_status: Mapped[str] = mapped_column(sa.String(32))
    reason: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EpochMetric(Base):
    """The full evaluation record of one epoch (losses, accuracy, f1, mcc, confusion, ...)."""

    __tablename__ = "epoch_metrics"

    job_id: Mapped[str] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    record: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class StepMetric(Base):
    """Training loss, learning rate and gradient norm at one optimizer step (every few steps)."""

    __tablename__ = "step_metrics"

    job_id: Mapped[str] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    epoch: Mapped[int]
    record: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobEvent(Base):
    """A job event; `id` is the SSE event id (increasing across all jobs)."""

    __tablename__ = "job_events"

    # BIGINT identity on PostgreSQL; INTEGER PRIMARY KEY (the rowid) on SQLite.
    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """Where the `best` or `last` checkpoint of a job lives in the object store."""

    __tablename__ = "checkpoints"

    job_id: Mapped[str] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    epoch: Mapped[int]
    key_prefix: Mapped[str] = mapped_column(sa.String(1024))
    manifest: Mapped[dict[str, Any]]
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    metrics: Mapped[dict[str, Any]]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
