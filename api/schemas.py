"""The HTTP contract: request and response models (pydantic), separate from the ORM models.

Naming family: `<Thing>Create` (request body), `<Thing>Read` (one resource), `<Thing>Page`
(cursor- or offset-paged list). `ErrorResponse` is the one shape of every error.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamguard.db.models import JobStatus
from streamguard.spec import TrainConfig

# --- errors ------------------------------------------------------------------------------------


class ErrorItem(BaseModel):
    """One problem: which field (dotted path, `body` for the whole body), what, and where."""

    field: str | None = Field(None, description="Dotted path of the field, e.g. `config.lr`, "
                                               "`datasets.train.dataset_id`, `file`, `body`.")
    message: str = Field(description="What is wrong and what would be accepted.")
    line: int | None = Field(None, description="1-based line of an uploaded file, when the "
                                               "problem is in one line.")


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. `invalid_train_config`.")
    message: str = Field(description="What went wrong and what would be accepted.")
    field: str | None = Field(None, description="Dotted path of the first offending field.")
    details: list[ErrorItem] | None = Field(
        None, description="Every problem found (fields, bad lines, failed checks), or null.")
    request_id: str | None = Field(None, description="The request's id (also the "
                                                     "`X-Request-ID` response header and in the "
                                                     "server log).")


class ErrorResponse(BaseModel):
    """The one shape of every 4xx and 5xx answer."""

    error: ErrorDetail


# --- datasets ----------------------------------------------------------------------------------


class DuplicateStats(BaseModel):
    rows: int
    groups: int
    conflicting_groups: int


class DatasetStats(BaseModel):
    rows: int
    n_safe: int
    n_vulnerable: int
    vulnerable_fraction: float | None
    duplicates: DuplicateStats
    chars: dict[str, int] | None = Field(None, description="Function length percentiles.")


class DatasetRead(BaseModel):
    id: str
    name: str
    size_bytes: int
    sha256: str
    stats: DatasetStats
    created_at: datetime


class DatasetPage(BaseModel):
    items: list[DatasetRead]
    next_cursor: str | None


# --- jobs --------------------------------------------------------------------------------------


class DatasetRef(BaseModel):
    """Exactly one of `dataset_id` (an upload) or `uri` (`s3://<bucket>/tenants/<you>/...`)."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str | None = Field(None, min_length=1, max_length=36)
    uri: str | None = Field(None, min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_of(self) -> DatasetRef:
        if (self.dataset_id is None) == (self.uri is None):
            raise ValueError("give exactly one of `dataset_id` (from POST /v1/datasets) or "
                             "`uri` (s3://<bucket>/tenants/<tenant_id>/...)")
        if self.uri is not None and not self.uri.startswith("s3://"):
            raise ValueError(f"uri {self.uri!r} is not accepted: only s3://<bucket>/tenants/"
                             "<tenant_id>/... URIs of the configured bucket, or a dataset_id")
        return self


class JobDatasets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: DatasetRef
    val: DatasetRef
    test: DatasetRef | None = None


class JobCreate(BaseModel):
    """Body of POST /v1/jobs. `config` holds TrainConfig fields (defaults fill the rest)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=200)
    datasets: JobDatasets
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="TrainConfig fields (see the TrainConfig schema); unknown fields are refused "
                    "and every bad field is reported as `config.<field>`.")
    max_runtime_s: int | None = Field(
        None, ge=60, description="Wall-time limit; at most settings.worker.max_job_runtime_s.")


class Progress(BaseModel):
    epoch: int = Field(ge=0, description="Completed epochs.")
    epochs: int = Field(ge=1)
    percent: float = Field(ge=0, le=100)


class TransitionRead(BaseModel):
    from_status: str | None
    to_status: str
    reason: str
    created_at: datetime


class JobSummary(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    outcome_message: str | None
    cancel_requested: bool
    progress: Progress
    eta_s: float | None = Field(None, description="Seconds left, from the time per finished "
                                                  "epoch; only while running.")
    best_epoch: int | None
    best_metric: float | None
    selection_metric: str | None
    test_metrics: dict[str, Any] | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobRead(JobSummary):
    datasets: JobDatasets
    config: TrainConfig
    max_runtime_s: int | None
    transitions: list[TransitionRead]


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at "
                                                "the end.")


class EpochMetricRead(BaseModel):
    epoch: int
    metrics: dict[str, Any] = Field(description="The full evaluation record of the epoch.")
    prediction_distribution: Any = None
    confusion_matrix: Any = None
    created_at: datetime
    updated_at: datetime


class EpochMetricPage(BaseModel):
    items: list[EpochMetricRead]
    offset: int
    limit: int
    next_offset: int | None


class JobEventRead(BaseModel):
    """One SSE message: `id:` is `id`, `event:` is `kind`, `data:` is `payload` as JSON."""

    id: int
    kind: Literal["status", "epoch", "warning", "checkpoint", "test"] | str
    payload: dict[str, Any]


# --- checkpoints -------------------------------------------------------------------------------


class CheckpointRead(BaseModel):
    name: str
    epoch: int
    size_bytes: int
    sha256: str | None
    metrics: dict[str, Any]
    updated_at: datetime


class CheckpointList(BaseModel):
    items: list[CheckpointRead]


# --- health ------------------------------------------------------------------------------------


class HealthRead(BaseModel):
    status: Literal["ok"] = "ok"


class CheckRead(BaseModel):
    ok: bool
    detail: str


class ReadinessRead(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, CheckRead]
