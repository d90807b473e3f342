"""Prediction use case: score functions with a job's best checkpoint on an inference worker.

The API process never loads a model (nor torch): `predict` checks that the job finished with a
model, sends `streamguard.predict.INFERENCE_TASK` to the `inference` queue and waits at most
`inference.request_timeout_s` for the answer in the result backend (the task expires then too,
so a worker that comes back later does not run it for nobody). The answer is read once and
deleted (`forget`).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from celery import Celery
from celery.exceptions import TimeoutError as ResultTimeout
from celery.result import AsyncResult
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from api.errors import QueueUnavailable
from api.queue import build_celery
from streamguard.broker import RETRY_POLICY
from streamguard.contract import FINISHED_WITH_MODEL
from streamguard.db import metrics as metrics_repo
from streamguard.db.models import Job
from streamguard.errors import JobStateConflict
from streamguard.predict import (
    INFERENCE_TASK,
    MAX_FUNCTION_BYTES,
    MAX_FUNCTIONS,
    inference_celery_config,
)
from streamguard.settings import Settings

# --- the HTTP contract (to move into api/schemas.py) ---------------------------------------------


def _utf8_bounded(text: str) -> str:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode text (a lone surrogate); send the source as UTF-8 "
                         "text") from None
    if size > MAX_FUNCTION_BYTES:
        raise ValueError(f"function longer than {MAX_FUNCTION_BYTES} bytes (UTF-8); "
                         "split the request or shorten the function")
    return text


#: Source text: any character but the C0/C1 controls other than tab, line feed, vertical tab,
#: form feed and carriage return (the API's edge refuses the others in every JSON body).
SOURCE_PATTERN = r"^[^\x00-\x08\x0e-\x1f\x7f-\x9f]+$"
FunctionSource = Annotated[str, Field(min_length=1, max_length=MAX_FUNCTION_BYTES,
                                      pattern=SOURCE_PATTERN,
                                      description="One function's source text (UTF-8, at most "
                                                  f"{MAX_FUNCTION_BYTES} bytes; tabs and line "
                                                  "breaks are fine, other control characters "
                                                  "are not)."),
                           AfterValidator(_utf8_bounded)]


class PredictRequest(BaseModel):
    """Functions to score with the job's best checkpoint."""

    model_config = ConfigDict(extra="forbid")

    functions: list[FunctionSource] = Field(
        min_length=1, max_length=MAX_FUNCTIONS,
        description=f"1 to {MAX_FUNCTIONS} function source texts; the whole body is also "
                    "bounded by the deployment's api.max_json_bytes (413).")


class PredictCheckpoint(BaseModel):
    """The checkpoint that answered."""

    name: Literal["best"]
    epoch: int = Field(ge=1, description="The epoch the checkpoint was saved after.")
    sha256: str = Field(description="sha256 of the checkpoint's model archive (as listed by "
                                    "GET /v1/jobs/{id}/checkpoints).")


class PredictItem(BaseModel):
    """One function's prediction, in request order."""

    probability: float = Field(ge=0.0, le=1.0, allow_inf_nan=False,
                               description='Softmax probability of "vulnerable".')
    label: int = Field(ge=0, le=1, description="1 (vulnerable) when probability >= threshold.")
    label_name: Literal["safe", "vulnerable"]


class PredictResponse(BaseModel):
    """The predictions of one request, and the checkpoint and threshold that made them."""

    job_id: str = Field(description="The job whose best checkpoint answered.")
    checkpoint: PredictCheckpoint
    threshold: float = Field(ge=0.0, le=1.0, description="The decision threshold of the model "
                                                         "(0.5 unless the model names one).")
    items: list[PredictItem]


# --- the use case -----------------------------------------------------------------------------

#: Longest pause between two looks at the result backend.
POLL_MAX_S = 0.5


class InferenceUnavailable(QueueUnavailable):
    """No inference worker answered in time (HTTP 503 with Retry-After)."""

    code = "inference_unavailable"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


def build_inference_client(settings: Settings) -> Celery:
    """The API's producer for the inference queue: bounded publishing (`build_celery`) plus
    the inference result backend."""
    app = build_celery(settings)
    config = inference_celery_config(settings)
    app.conf.update({k: config[k] for k in (
        "task_default_queue", "task_routes", "result_backend", "result_serializer",
        "result_accept_content", "result_expires", "database_engine_options")})
    return app


def _check_ready(*, session: Session, job: Job) -> None:
    """JobStateConflict unless the job finished with a model and has a `best` checkpoint."""
    finished = sorted(s.value for s in FINISHED_WITH_MODEL)
    if job.status not in FINISHED_WITH_MODEL:
        raise JobStateConflict(f"job {job.id} is {job.status}: predictions need a job that "
                               f"finished with a model ({', '.join(finished)})")
    if metrics_repo.get_checkpoint(session=session, job_id=job.id, name="best") is None:
        raise JobStateConflict(f"job {job.id} ({job.status}) has no best checkpoint")


def _wait(result: AsyncResult, timeout: float) -> Any:
    """The task's return value, polling the result backend with backoff (50 ms doubling to
    POLL_MAX_S: a quick answer is seen at once, a slow one costs few queries; off a pool, each
    poll of Celery's database backend opens a connection). Raises celery's TimeoutError."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while not result.ready():
        left = deadline - time.monotonic()
        if left <= 0:
            raise ResultTimeout(f"no result within {timeout} s")
        time.sleep(min(delay, left))
        delay = min(2 * delay, POLL_MAX_S)
    return result.get(timeout=1.0, propagate=False)


def predict(*, session: Session, settings: Settings, client: Celery, job: Job,
            functions: list[str]) -> PredictResponse:
    """Raises JobStateConflict (no model), InferenceUnavailable (no answer in time), or
    RuntimeError (the worker failed: a 500 with the request id)."""
    _check_ready(session=session, job=job)
    job_id, tenant_id = job.id, job.tenant_id
    session.rollback()  # hand the connection back to the pool while the worker runs
    timeout = settings.inference.request_timeout_s
    result = client.send_task(INFERENCE_TASK, args=[tenant_id, job_id, functions],
                              queue=settings.inference.queue, expires=timeout, retry=True,
                              retry_policy=RETRY_POLICY)
    try:
        answer: Any = _wait(result, timeout)
        state = result.state
    except ResultTimeout:
        raise InferenceUnavailable(
            f"no inference worker answered within {timeout:g} s "
            "(inference.request_timeout_s); retry later", retry_after_s=int(timeout)) from None
    finally:
        result.forget()  # read once; an unread one expires (inference.result_expires_s)
    if state != "SUCCESS" or not isinstance(answer, dict):
        raise RuntimeError(f"inference task for job {job_id} ended {state}: {answer!r}")
    if "error" in answer:
        error = answer["error"]
        if error.get("code") == "no_checkpoint":
            raise JobStateConflict(f"job {job_id} has no best checkpoint")
        raise RuntimeError(f"inference for job {job_id} failed: {error}")
    return PredictResponse(job_id=job_id, checkpoint=PredictCheckpoint(**answer["checkpoint"]),
                           threshold=answer["threshold"],
                           items=[PredictItem(**item) for item in answer["items"]])

