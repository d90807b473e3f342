"""The HTTP contract: request and response models (pydantic), separate from the ORM models.

Naming family: `<Thing>Create` (request body), `<Thing>Read` (one resource), `<Thing>Page`
(cursor- or offset-paged list). `ErrorResponse` is the one shape of every error. Every number
is typed; the stored evaluation records (JSON written by the worker) are turned into these
models here, in one place (`EpochMetrics.from_record`, `TestMetrics.from_record`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamguard.contract import JobConfig, JobDatasets, JobSpec, JobStatus
from streamguard.spec import Tracker

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
    rows: int = Field(description="Rows whose function text occurs more than once.")
    groups: int = Field(description="Distinct duplicated functions.")
    conflicting_groups: int = Field(description="Duplicated functions with both labels.")


class LengthStats(BaseModel):
    """Function length percentiles, in characters."""

    min: int
    p50: int
    p90: int
    p99: int
    max: int


class DatasetStats(BaseModel):
    rows: int
    n_safe: int
    n_vulnerable: int
    vulnerable_fraction: float | None
    duplicates: DuplicateStats
    chars: LengthStats | None = None


class DatasetRead(BaseModel):
    id: str
    name: str
    size_bytes: int
    sha256: str
    stats: DatasetStats
    created_at: datetime


class DatasetPage(BaseModel):
    items: list[DatasetRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at "
                                                "the end.")


class DatasetUpload(BaseModel):
    """Multipart form of POST /v1/datasets."""

    file: bytes = Field(description="JSONL: one `{\"func\": str, \"target\": 0|1}` object a "
                                    "line (other fields are kept).")
    name: str | None = Field(None, min_length=1, max_length=200,
                             description="A label; defaults to the file name.")


# --- evaluation records ------------------------------------------------------------------------


class PredictionDistribution(BaseModel):
    """How many functions of the split each class was predicted for, and how many it has."""

    predicted_vulnerable: int
    predicted_safe: int
    actual_vulnerable: int
    actual_safe: int


class ConfusionMatrix(BaseModel):
    """Counts with "vulnerable" as the positive class."""

    true_negative: int = Field(description="Safe, predicted safe.")
    false_positive: int = Field(description="Safe, predicted vulnerable.")
    false_negative: int = Field(description="Vulnerable, predicted safe.")
    true_positive: int = Field(description="Vulnerable, predicted vulnerable.")

    @classmethod
    def from_rows(cls, rows: Any) -> ConfusionMatrix:
        """From `confusion[actual][predicted]` as the trainer writes it."""
        (tn, fp), (fn, tp) = rows
        return cls(true_negative=tn, false_positive=fp, false_negative=fn, true_positive=tp)


class EvalScores(BaseModel):
    """Scores of one evaluation; precision, recall and F1 are those of the vulnerable class."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    mcc: float
    roc_auc: float | None = Field(description="Null when the split has one class only.")
    pr_auc: float | None = Field(None, description=(
        "Average precision (area under the precision-recall curve, no interpolation) of "
        "p(vulnerable). Null when the split has one class only."))
    recall_at_fpr10: float | None = Field(None, description=(
        "The highest recall of a threshold that flags at most 10 % of the safe functions "
        "(false-positive rate <= 0.10). Null when the split has one class only."))
    best_threshold: float | None = Field(None, description=(
        "The p(vulnerable) threshold maximising F1 on this split (vulnerable when p >= "
        "threshold; ties to the lowest threshold). Null when the split has one class only."))
    best_threshold_f1: float | None = Field(None, description="The F1 at `best_threshold`.")
    brier: float | None = Field(None, description=(
        "Brier score: mean squared error of p(vulnerable); lower is better. Null for an empty "
        "split."))
    ece: float | None = Field(None, description=(
        "Expected calibration error of p(vulnerable) over 10 equal-width bins; lower is "
        "better. Null for an empty split."))
    prediction_distribution: PredictionDistribution
    confusion_matrix: ConfusionMatrix

    @staticmethod
    def _fields(record: Mapping[str, Any]) -> dict[str, Any]:
        return {**record,
                "confusion_matrix": ConfusionMatrix.from_rows(record["confusion_matrix"])}


class EpochMetrics(EvalScores):
    """One epoch's validation record, as stored and as streamed in `epoch` events."""

    epoch: int = Field(ge=1)
    step: int = Field(ge=0, description="Optimizer steps so far.")
    train_loss: float | None
    val_loss: float | None
    lr: float
    train_samples_per_s: float
    epoch_time_s: float
    warnings: list[str] = Field(description="Collapse-guard warnings of this epoch.")
    is_best: bool = Field(description="This epoch is the best so far (and passed the guard).")
    collapse_streak: int = Field(ge=0, description="Consecutive evaluations below the stop "
                                                   "ratio.")
    replayed: bool = Field(False, description=(
        "This epoch was recorded before and ran again: an earlier attempt of the job lost the "
        "job before the epoch's checkpoint was published (this attempt resumed from the one "
        "before), or the guard rolled back to an earlier checkpoint. These values replace the "
        "earlier ones (one row per epoch in the metrics history; in the event stream, the "
        "later `epoch` event wins)."))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EpochMetrics:
        return cls.model_validate(cls._fields(record))


class EvaluationMetrics(EvalScores):
    """A validation evaluation inside an epoch (`config.eval_every_steps`), as streamed in
    `evaluation` events; the evaluation at each epoch's end is the `epoch` record."""

    epoch: int = Field(ge=1, description="The epoch in progress.")
    step: int = Field(ge=1, description="Optimizer steps so far.")
    val_loss: float | None
    warnings: list[str] = Field(description="Collapse-guard warnings of this evaluation.")
    collapse_streak: int = Field(ge=0, description="Consecutive evaluations below the stop "
                                                   "ratio.")
    replayed: bool = False

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EvaluationMetrics:
        return cls.model_validate(cls._fields(record))


class ThresholdScores(BaseModel):
    """Scores of a split with "vulnerable" when p(vulnerable) >= `threshold`."""

    threshold: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    mcc: float
    confusion_matrix: ConfusionMatrix
    prediction_distribution: PredictionDistribution

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ThresholdScores:
        return cls.model_validate(
            {**record, "confusion_matrix": ConfusionMatrix.from_rows(record["confusion_matrix"])})


class TestMetrics(EvalScores):
    """The best checkpoint's scores on the test split: the top-level scores at the argmax
    (p >= 0.5), `at_threshold` at the threshold chosen on validation (never on test)."""

    __test__ = False  # not a pytest class

    best_epoch: int | None = Field(None, description="The epoch of the checkpoint tested.")
    loss: float | None
    threshold: float | None = Field(None, description=(
        "The decision threshold saved with the model: the best epoch's validation "
        "`best_threshold`. Null when none was chosen (the model then uses 0.5)."))
    at_threshold: ThresholdScores | None = Field(None, description=(
        "The test scores at `threshold`. The test split never chooses the threshold."))

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TestMetrics:
        fields = cls._fields(record)
        if record.get("at_threshold") is not None:
            fields["at_threshold"] = ThresholdScores.from_record(record["at_threshold"])
        return cls.model_validate(fields)


# --- jobs --------------------------------------------------------------------------------------


class JobCreate(JobSpec):
    """Body of POST /v1/jobs: what to train. Everything is checked before anything is queued."""


class Progress(BaseModel):
    epoch: int = Field(ge=0, description="Completed epochs.")
    epochs: int = Field(ge=1)
    step: int = Field(0, ge=0, description="Optimizer step of the latest step metrics.")
    total_steps: int | None = Field(None, ge=1, description="Optimizer steps of the whole run "
                                                            "(known once it runs).")
    percent: float = Field(ge=0, le=100, description="From optimizer steps once they are "
                                                     "known, else from epochs.")


class TransitionRead(BaseModel):
    from_status: JobStatus | None
    to_status: JobStatus
    reason: str
    created_at: datetime


class JobSummary(BaseModel):
    id: str
    name: str | None
    status: JobStatus
    outcome_message: str | None
    cancel_requested: bool
    progress: Progress
    eta_s: float | None = Field(None, description="Seconds left, from the running time per "
                                                  "optimizer step so far (per finished epoch "
                                                  "before any step metrics); only while "
                                                  "running.")
    best_epoch: int | None
    best_metric: float | None
    selection_metric: str
    test_metrics: TestMetrics | None
    warnings: list[str] = Field(description="Problems found at submit that did not stop it "
                                            "(e.g. train/val overlap).")
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None


class JobRead(JobSummary):
    datasets: JobDatasets
    config: JobConfig
    max_runtime_s: int | None
    transitions: list[TransitionRead]


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at "
                                                "the end.")


class EpochMetricRead(EpochMetrics):
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, record: Mapping[str, Any], created_at: datetime,
                 updated_at: datetime) -> EpochMetricRead:
        return cls.model_validate({**cls._fields(record), "created_at": created_at,
                                   "updated_at": updated_at})


class EpochMetricPage(BaseModel):
    items: list[EpochMetricRead]
    offset: int
    limit: int
    next_offset: int | None


class StepMetrics(BaseModel):
    """Training metrics at one optimizer step (every `log_every_steps` steps and at the end of
    each epoch), as stored and as streamed in `step` events."""

    step: int = Field(ge=1, description="Optimizer steps so far.")
    epoch: int = Field(ge=1, description="The epoch in progress (1-based).")
    epoch_progress: float = Field(ge=0, le=1, description="Fraction of the epoch's batches done.")
    total_steps: int = Field(ge=1, description="Optimizer steps of the whole run.")
    train_loss: float = Field(description="Mean training loss over the steps since the "
                                          "previous point.")
    lr: float = Field(description="Learning rate after this step.")
    grad_norm: float | None = Field(description="Gradient norm before clipping; null when an "
                                                "fp16 overflow skipped the step.")
    samples_per_s: float = Field(ge=0, description="Training throughput since the previous "
                                                   "point.")
    replayed: bool = Field(False, description=(
        "An earlier attempt had recorded this step; this attempt resumed from an earlier "
        "checkpoint and ran it again. These values replace the earlier ones."))


class StepMetricRead(StepMetrics):
    created_at: datetime
    updated_at: datetime


class StepMetricPage(BaseModel):
    items: list[StepMetricRead]
    next_after_step: int | None = Field(description="Pass as `after_step` for the next page; "
                                                    "null on the last page.")


# --- events ------------------------------------------------------------------------------------


class StatusPayload(BaseModel):
    status: JobStatus
    from_status: JobStatus | None = Field(alias="from", serialization_alias="from")
    reason: str
    attempt: int | None = None

    model_config = ConfigDict(populate_by_name=True)


class WarningPayload(BaseModel):
    """A collapse-guard warning (`source: guard`, with the evaluation's prediction
    distribution), or an experiment tracker that failed and is off for the rest of the run
    (`source: tracker`; the job trains on)."""

    epoch: int
    step: int | None = Field(None, description="The optimizer step of the evaluation (or of the "
                                               "last metrics before a tracker failed).")
    message: str
    source: Literal["guard", "tracker"] = "guard"
    tracker: Tracker | None = Field(None, description="The tracker that failed (source: "
                                                      "tracker).")
    prediction_distribution: PredictionDistribution | None = Field(
        None, description="The evaluation's prediction distribution (source: guard).")


class CheckpointPayload(BaseModel):
    name: Literal["best", "last"]
    epoch: int
    step: int | None = Field(None, description="Set for a mid-epoch `last` (see CheckpointRead).")
    size_bytes: int
    sha256: str


class RollbackPayload(BaseModel):
    """The guard saw a collapse and, with `on_collapse: rollback`, went back to the best passing
    checkpoint with a lower learning rate instead of stopping."""

    epoch: int = Field(description="The epoch of the evaluation that collapsed.")
    step: int = Field(description="Its optimizer step.")
    to_epoch: int = Field(description="The epoch of the checkpoint restored.")
    to_step: int = Field(description="The optimizer step training continues from.")
    lr_factor: float = Field(description="The learning rate is now multiplied by this (every "
                                         "rollback so far, compounded).")
    rollback: int = Field(ge=1, description="This run's rollback count, this one included.")
    max_rollbacks: int
    reason: str = Field(description="Why: the guard's collapse message.")


class _EventBase(BaseModel):
    id: int = Field(description="The event id; the SSE `id:` line (send it back as "
                                "Last-Event-ID).")
    created_at: datetime


class StatusEvent(_EventBase):
    kind: Literal["status"]
    data: StatusPayload


class EpochEvent(_EventBase):
    kind: Literal["epoch"]
    data: EpochMetrics


class WarningEvent(_EventBase):
    kind: Literal["warning"]
    data: WarningPayload


class CheckpointEvent(_EventBase):
    kind: Literal["checkpoint"]
    data: CheckpointPayload


class StepEvent(_EventBase):
    kind: Literal["step"]
    data: StepMetrics


class EvaluationEvent(_EventBase):
    kind: Literal["evaluation"]
    data: EvaluationMetrics


class RollbackEvent(_EventBase):
    kind: Literal["rollback"]
    data: RollbackPayload


class TestEvent(_EventBase):
    __test__ = False  # not a pytest class

    kind: Literal["test"]
    data: TestMetrics


JobEventRead = Annotated[StatusEvent | EpochEvent | StepEvent | EvaluationEvent | RollbackEvent
                         | WarningEvent | CheckpointEvent | TestEvent,
                         Field(discriminator="kind")]


class JobEventPage(BaseModel):
    items: list[JobEventRead]
    next_after_id: int | None = Field(description="Pass as `after_id` for the next page; null "
                                                  "when no more events are stored yet.")


# --- checkpoints -------------------------------------------------------------------------------


class CheckpointRead(BaseModel):
    name: Literal["best", "last"]
    epoch: int = Field(description="The epoch it was saved in (the last completed one for an "
                                    "end-of-epoch checkpoint).")
    step: int | None = Field(None, description="Set for a mid-epoch `last` (a worker shutting "
                                               "down saves one): the optimizer step it holds.")
    size_bytes: int = Field(description="Size of the model archive (.tar.gz).")
    sha256: str = Field(description="sha256 of the model archive.")
    metrics: EpochMetrics | None = Field(description="The epoch's validation record; null for "
                                                     "a mid-epoch checkpoint (not evaluated).")
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
