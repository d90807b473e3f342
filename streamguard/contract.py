"""The API–worker contract, written once: both `api/` and `worker/` import it, never each other.

It holds what the two processes must agree on:

- the job spec (`JobSpec`: name, dataset references, `JobConfig`, runtime limit), validated by
  the API at submit and once more, from the stored JSON, by the worker (`load_job_spec`);
- which base models a *service* job may name (`JobConfig.model`, `parse_model_ref`): a
  from-scratch architecture, a hub `owner/name`, or `job:<id>[/best|/last]`, one of the
  tenant's own finished jobs. Never a server path: the CLI's `TrainConfig` still accepts a
  local directory, a job spec does not;
- the Celery task name, the Redis channel of job events, the object-key layout;
- job statuses, the terminal set and event kinds;
- the one dataset-URI check (`dataset_uri_key`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from streamguard.errors import InvalidTrainConfig, StreamGuardError
from streamguard.spec import SCRATCH_MODELS, TrainConfig, describe_validation_error

if TYPE_CHECKING:
    from streamguard.settings import Settings
    from streamguard.storage import ArtifactStore

# --- broker and pub/sub ------------------------------------------------------------------------

#: The Celery task the API sends by name (`send_task`) with `[job_id]` as its only argument.
TRAIN_TASK = "worker.tasks.train_job"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Broker settings the API's producer and the workers share (`Celery.conf.update`)."""
    return {
        "broker_url": settings.broker_url_resolved(),
        "broker_transport_options": settings.broker_transport_options(),
        "task_default_queue": settings.worker.queue,
        "task_routes": {TRAIN_TASK: {"queue": settings.worker.queue}},
        "task_serializer": "json",
        "accept_content": ["json"],
    }


def events_channel(job_id: str) -> str:
    """The Redis pub/sub channel announcing `{"id": event_id}` of a job's committed events."""
    return f"job:{job_id}:events"


# --- statuses and events -----------------------------------------------------------------------


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    COLLAPSED = "collapsed"
    NOT_LEARNING = "not_learning"  # never predicted both classes after the guard's grace
    NON_FINITE_LOSS = "non_finite_loss"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"  # the job's running time reached its max_runtime_s
    FAILED = "failed"


TERMINAL_STATUSES: frozenset[JobStatus] = frozenset({
    JobStatus.COMPLETED, JobStatus.EARLY_STOPPED, JobStatus.COLLAPSED, JobStatus.NOT_LEARNING,
    JobStatus.NON_FINITE_LOSS, JobStatus.CANCELLED, JobStatus.TIMED_OUT, JobStatus.FAILED,
})

#: Terminal statuses whose `best` checkpoint another job may start from (`job:<id>`).
FINISHED_WITH_MODEL: frozenset[JobStatus] = frozenset({
    JobStatus.COMPLETED, JobStatus.EARLY_STOPPED,
})


class EventKind(StrEnum):
    STATUS = "status"
    EPOCH = "epoch"
    WARNING = "warning"
    CHECKPOINT = "checkpoint"
    TEST = "test"  # the best checkpoint's test-split metrics
    STEP = "step"  # training loss, learning rate and gradient norm every few optimizer steps
    EVALUATION = "evaluation"  # a validation evaluation inside an epoch (eval_every_steps)
    ROLLBACK = "rollback"  # the guard restored the best passing checkpoint with a lower LR


#: In an exported model directory: StreamGuard's facts about the model (the decision threshold
#: chosen on validation, labels, ...). `streamguard predict` and the inference worker read it.
MODEL_META_FILE = "streamguard.json"


# --- object-store keys -------------------------------------------------------------------------

SPLITS = ("train", "val", "test")
CHECKPOINT_NAMES = ("best", "last")


def tenant_prefix(tenant_id: str) -> str:
    """Everything of a tenant lives under this key prefix."""
    return f"tenants/{tenant_id}/"


def dataset_key(tenant_id: str, dataset_id: str) -> str:
    """An uploaded dataset's JSONL file."""
    return f"{tenant_prefix(tenant_id)}datasets/{dataset_id}.jsonl"


def dataset_hashes_key(tenant_id: str, dataset_id: str) -> str:
    """The sorted 8-byte hashes of an uploaded dataset's functions (overlap checks)."""
    return f"{tenant_prefix(tenant_id)}datasets/{dataset_id}.hashes"


def job_prefix(tenant_id: str, job_id: str) -> str:
    """A job's artifacts: `checkpoints/epoch-0001/...`, its archive and the pointers."""
    return f"{tenant_prefix(tenant_id)}jobs/{job_id}/"


def checkpoint_pointer_key(tenant_id: str, job_id: str, name: str) -> str:
    """`checkpoints/best.json` / `last.json`: written after the checkpoint is fully uploaded."""
    return f"{job_prefix(tenant_id, job_id)}checkpoints/{name}.json"


class InvalidDatasetUri(StreamGuardError):
    code = "invalid_request"


def store_base(store: ArtifactStore) -> str:
    """The store's own URI prefix of every key, e.g. `s3://bucket/prefix/`."""
    return store.uri("x")[:-1]


def dataset_uri_key(uri: str, *, store: ArtifactStore, tenant_id: str) -> str:
    """The store key named by a dataset `uri`, if it is a plain object of the tenant's area.

    Raises InvalidDatasetUri otherwise (the message says what would be accepted).
    """
    from streamguard.storage import check_key

    base = store_base(store)
    if not base.startswith("s3://"):  # a local store's URIs are server paths: never shown
        raise InvalidDatasetUri(f"uri {uri!r} is not accepted: this deployment stores datasets "
                                "locally, so pass a dataset_id from POST /v1/datasets",
                                field="uri")
    area = f"{base}{tenant_prefix(tenant_id)}"
    accepted = f"a dataset_id from POST /v1/datasets, or {area}<key>"
    if not uri.startswith(area) or "?" in uri or "#" in uri:
        raise InvalidDatasetUri(f"uri {uri!r} is outside your area; accepted: {accepted}",
                                field="uri")
    key = uri[len(base):]
    try:
        check_key(key)
    except StreamGuardError:  # '..', empty parts, a trailing '/', NUL, ...
        raise InvalidDatasetUri(f"uri {uri!r} is not a plain object key; accepted: "
                                f"{accepted}", field="uri") from None
    return key


# --- base models -------------------------------------------------------------------------------

JOB_MODEL_RE = re.compile(r"^job:([0-9a-f]{32})(?:/(best|last))?$")
#: One part of a hub name: letters and digits, single `.`, `_` or `-` between them (so no `..`,
#: no leading or trailing separator).
_HUB_PART = r"[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*"
HUB_NAME_RE = re.compile(rf"^{_HUB_PART}/{_HUB_PART}$")
MODEL_FORMS = (f"a from-scratch architecture ({', '.join(sorted(SCRATCH_MODELS))}), a Hugging "
               "Face hub name `owner/name` (letters, digits, `_`, `.`, `-`), or "
               "`job:<job id>[/best|/last]` naming one of your finished jobs")


@dataclass(frozen=True)
class ModelRef:
    """What a job's `config.model` names: `scratch`, `hub`, or `job` (another job's weights)."""

    kind: Literal["scratch", "hub", "job"]
    name: str
    job_id: str | None = None
    checkpoint: str = "best"


def parse_model_ref(model: str) -> ModelRef:
    """Classify a service job's `model`; ValueError (saying what is accepted) otherwise."""
    if model in SCRATCH_MODELS:
        return ModelRef("scratch", model)
    if match := JOB_MODEL_RE.match(model):
        return ModelRef("job", model, job_id=match.group(1), checkpoint=match.group(2) or "best")
    if HUB_NAME_RE.match(model):
        return ModelRef("hub", model)
    raise ValueError(f"{model!r} is not accepted; accepted: {MODEL_FORMS}. Server paths are "
                     "never accepted")


class JobConfig(TrainConfig):
    """`TrainConfig` as a service job takes it: `model` never names a server path."""

    model: str = Field(
        "microsoft/codebert-base", min_length=1, max_length=200,
        # The same forms parse_model_ref accepts, stated for clients and validators.
        pattern="^(" + "|".join(sorted(SCRATCH_MODELS)) + r"|job:[0-9a-f]{32}(/(best|last))?|"
                + f"{_HUB_PART}/{_HUB_PART})$",
        description=f"Base model: {MODEL_FORMS}.")

    @field_validator("model", mode="before")
    @classmethod
    def _model_form(cls, value: Any) -> Any:
        """Before the pattern: a refusal that lists the accepted forms, not the regex."""
        if isinstance(value, str):
            parse_model_ref(value)
        return value


# --- the job spec ------------------------------------------------------------------------------

ID_PATTERN = r"^[0-9a-f]{32}$"
IdStr = Annotated[str, Field(min_length=32, max_length=32, pattern=ID_PATTERN,
                             description="An id as the API hands it out (32 hex characters).")]


class DatasetIdRef(BaseModel):
    """A dataset uploaded with POST /v1/datasets."""

    model_config = ConfigDict(extra="forbid", title="DatasetIdRef")

    dataset_id: IdStr


class DatasetUriRef(BaseModel):
    """An object already in the configured S3 bucket, under `tenants/<your tenant id>/`."""

    model_config = ConfigDict(extra="forbid", title="DatasetUriRef")

    uri: str = Field(min_length=6, max_length=1024, pattern=r"^s3://[^\x00-\x1f\x7f-\x9f]+$",
                     description="`s3://<bucket>/<prefix>/tenants/<your tenant id>/<key>`")


def _ref_kind(value: Any) -> str | None:
    """Which reference a value is meant to be: the one whose key it has (`uri` wins)."""
    if isinstance(value, BaseModel):
        return type(value).__name__
    if isinstance(value, dict):
        return "DatasetUriRef" if "uri" in value else "DatasetIdRef"
    return None


#: Exactly one of the two; errors name the fields of the one the value has the key of.
DatasetRef = Annotated[
    Annotated[DatasetIdRef, Tag("DatasetIdRef")] | Annotated[DatasetUriRef, Tag("DatasetUriRef")],
    Discriminator(_ref_kind, custom_error_type="dataset_ref",
                  custom_error_message="give an object with `dataset_id` or `uri`")]


class JobDatasets(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: DatasetRef
    val: DatasetRef
    test: DatasetRef | None = None

    def refs(self) -> dict[str, DatasetRef]:
        """The given splits by name (`test` only when present)."""
        return {split: ref for split in SPLITS if (ref := getattr(self, split)) is not None}


#: Printable text: no C0/C1 control characters, no DEL.
NAME_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
NameStr = Annotated[str, Field(min_length=1, max_length=200, pattern=NAME_PATTERN,
                               description="A label for people; no control characters.")]


class JobSpec(BaseModel):
    """What to train: the body of POST /v1/jobs, stored as the job row's `spec` JSON."""

    model_config = ConfigDict(extra="forbid")

    name: NameStr | None = None
    datasets: JobDatasets
    config: JobConfig = Field(default_factory=JobConfig)  # type: ignore[arg-type]
    max_runtime_s: int | None = Field(
        None, ge=60, le=365 * 24 * 3600,
        description="Wall-time limit in seconds; at most the deployment's "
                    "worker.max_job_runtime_s.")


def load_job_spec(stored: dict[str, object]) -> JobSpec:
    """The worker's one validation of a stored spec; InvalidTrainConfig names bad fields."""
    try:
        return JobSpec.model_validate(stored)
    except ValidationError as exc:
        raise InvalidTrainConfig(describe_validation_error(exc)) from None
