"""What the train_job task needs around `streamguard.training.run`: claiming, heartbeats (which
also count the job's running time), dataset files, cancellation, runtime limits, preemption and
the final status. Keeps `worker/tasks.py` a thin adapter.

Redelivery (a worker died; the sweeper or the broker sends the task again) is the normal path:
`claim_job` reclaims a job whose lease expired with a new fencing token, and `run()` resumes from
the store's `checkpoints/last.json`. A delivery that finds another worker's lease live is not
dropped: `defer` sends it again for when that lease runs out. On the worker's SIGTERM
(`SHUTTING_DOWN`) the run stops after its current optimizer step, publishes `last` there, and
`release` puts the job back in the queue.
"""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery import Celery
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.orm import Session, sessionmaker

from streamguard import contract
from streamguard.broker import RETRY_POLICY
from streamguard.contract import DatasetIdRef, JobSpec, JobStatus
from streamguard.db import Job, JobEvent, make_engine, make_session_factory
from streamguard.db.datasets import get_dataset_or_raise
from streamguard.db.jobs import (
    claim_job,
    finish_job,
    get_job,
    get_job_or_raise,
    heartbeat,
    release_job,
)
from streamguard.db.models import utcnow
from streamguard.errors import StreamGuardError
from streamguard.manifest import fetch_dir, read_pointer
from streamguard.storage import ArtifactStore
from streamguard.training import RunResult, StopReason
from worker.sinks import EventPublisher, NullPublisher

log = logging.getLogger("streamguard.worker")

#: Set by the worker's warm shutdown (SIGTERM, `docker stop`): the running job stops after its
#: current optimizer step, publishes `last` there and goes back to the queue.
SHUTTING_DOWN = threading.Event()
#: PREEMPTED is the training core's; None only while a core without preemption is installed.
PREEMPTED = getattr(StopReason, "PREEMPTED", None)


@lru_cache
def session_factory(db_url: str) -> sessionmaker[Session]:
    """One engine (connection pool) per database URL per process; the settings' pool and
    timeouts when the URL is the configured one."""
    from streamguard.settings import get_settings

    settings = get_settings()
    db = settings.db
    kwargs: dict[str, Any] = {}
    if db_url.startswith("postgresql"):
        timeout_ms = int(settings.worker.idle_in_transaction_timeout_s * 1000)
        kwargs["connect_args"] = {
            "options": f"-c idle_in_transaction_session_timeout={timeout_ms}"}
    return make_session_factory(make_engine(db if db.url == db_url else db_url, **kwargs))


def set_torch_threads(threads: int | None) -> int:
    """Apply `worker.torch_threads` to this process (None: torch's default stays); returns the
    intra-op thread count torch uses now."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    return int(torch.get_num_threads())


def worker_id(hostname: str | None = None) -> str:
    """`host:pid`, recorded as the lease owner."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    token: int
    tenant_id: str
    spec: dict[str, Any]
    run_time_s: float  # running time of the earlier attempts (the runtime limit counts it)
    event_id: int = 0  # the `running` status event (announced once committed)


def latest_event_id(session: Session, job_id: str) -> int:
    """The job's newest event id: the status event a transition just added."""
    return int(session.scalar(sa.select(sa.func.max(JobEvent.id))
                              .where(JobEvent.job_id == job_id)) or 0)


def claim(factory: sessionmaker[Session], *, job_id: str, owner: str, lease_s: int,
          max_attempts: int) -> Claim | None:
    """Take the job's lease (committed), or None when it is finished, cancelled or leased."""
    with factory() as session, session.begin():
        token = claim_job(session=session, job_id=job_id, worker_id=owner, lease_s=lease_s,
                          max_attempts=max_attempts)
        if token is None:
            return None
        job = get_job_or_raise(session=session, job_id=job_id)
        return Claim(token, job.tenant_id, dict(job.spec), float(job.run_time_s or 0.0),
                     latest_event_id(session, job_id))


Enqueue = Callable[..., None]


def make_enqueue(app: Celery, queue: str) -> Enqueue:
    """`enqueue(job_id, countdown=None)`: send the contract's TRAIN_TASK for the job again."""
    def enqueue(job_id: str, countdown: float | None = None) -> None:
        # Bounded like the API's publish: a hung broker fails the send, it never hangs it.
        app.send_task(contract.TRAIN_TASK, args=[job_id], queue=queue, countdown=countdown,
                      retry=True, retry_policy=RETRY_POLICY)
    return enqueue


def claim_or_defer(factory: sessionmaker[Session], *, job_id: str, owner: str, lease_s: int,
                   max_attempts: int, enqueue: Enqueue, retry_s: float) -> Claim | None:
    """`claim`, or None after making sure the delivery is not lost: a live lease elsewhere is
    checked again when it ends (`defer`); a database that does not answer, in `retry_s`."""
    try:
        taken = claim(factory, job_id=job_id, owner=owner, lease_s=lease_s,
                      max_attempts=max_attempts)
    except (DBAPIError, SATimeoutError) as exc:  # the job stays as it was: try again soon
        log.warning("job %s: the database did not answer (%s); retrying in %.0f s", job_id,
                    type(exc).__name__, retry_s)
        enqueue(job_id, countdown=retry_s)
        return None
    if taken is None:
        defer(factory, job_id=job_id, enqueue=enqueue)
    return taken


def defer(factory: sessionmaker[Session], *, job_id: str, enqueue: Enqueue) -> None:
    """A delivery that could not claim the job: if another worker's lease is live, send the task
    again for when that lease runs out (it is checked then); a finished job needs nothing."""
    with factory() as session:
        job = get_job(session=session, job_id=job_id)
    now = utcnow()
    if job is None or job.status != JobStatus.RUNNING or job.lease_expires_at is None:
        log.info("job %s: %s; nothing to do for this delivery", job_id,
                 "not found" if job is None else job.status)
        return
    countdown = max(1.0, (job.lease_expires_at - now).total_seconds() + 1.0)
    enqueue(job_id, countdown=countdown)
    log.info("job %s: leased by another worker; checking again in %.0f s", job_id, countdown)


def finish(factory: sessionmaker[Session], *, job_id: str, token: int, status: JobStatus,
           message: str, run_time_s: float, publisher: EventPublisher | None = None,
           **extra: Any) -> None:
    """Fenced move to a terminal status; `transition` also records the `status` event, which
    `publisher` announces once committed (SSE streams end at once, not at their next poll)."""
    with factory() as session, session.begin():
        finish_job(session=session, job_id=job_id, token=token, status=status, message=message,
                   run_time_s=run_time_s, **extra)
        event_id = latest_event_id(session, job_id)
    (publisher or NullPublisher()).publish(job_id, event_id)


def release(factory: sessionmaker[Session], *, job_id: str, token: int, run_time_s: float,
            enqueue: Enqueue, publisher: EventPublisher | None = None) -> None:
    """Fenced move back to `queued` after a preemption, with the task sent again; the status
    event is announced like `finish`'s."""
    with factory() as session, session.begin():
        release_job(session=session, job_id=job_id, token=token, run_time_s=run_time_s,
                    enqueue=enqueue)
        event_id = latest_event_id(session, job_id)
    (publisher or NullPublisher()).publish(job_id, event_id)


class Heartbeat:
    """A daemon thread renewing the lease every `interval_s` with its own sessions.

    Each beat adds the running time since the last successful one to the job's `run_time_s`
    (what was not credited yet is `pending_s()`, passed on at finish or release). It remembers
    the last `cancel_requested` seen and sets `lost` when the lease is gone (the token went
    stale or the job left `running`); then it stops beating.
    """

    def __init__(self, factory: sessionmaker[Session], *, job_id: str, token: int,
                 lease_s: int, interval_s: float) -> None:
        self.factory, self.job_id, self.token = factory, job_id, token
        self.lease_s, self.interval_s = lease_s, interval_s
        self.cancel_requested = False
        self.lost = False
        self._credited_at = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        # In the task's context: its log lines name the job (streamguard.logs).
        self._thread = threading.Thread(target=contextvars.copy_context().run,
                                        args=(self._loop,), name=f"heartbeat-{job_id}",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def pending_s(self) -> float:
        """Running time not yet added to the job's `run_time_s`."""
        return time.monotonic() - self._credited_at

    def beat(self) -> None:
        with self._lock:
            now = time.monotonic()
            try:
                with self.factory() as session, session.begin():
                    result = heartbeat(session=session, job_id=self.job_id, token=self.token,
                                       lease_s=self.lease_s,
                                       run_time_s=now - self._credited_at)
            except Exception as exc:  # noqa: BLE001 - a DB blip: try again next beat
                log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
                return
            if result.ok:
                self._credited_at = now
        self.cancel_requested = result.cancel_requested
        if not result.ok:
            log.warning("job %s: lease lost (token %s); stopping", self.job_id, self.token)
            self.lost = True
            self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.beat()


class Canceller:
    """The `should_cancel` callable: a cancel request, a lost lease, or the runtime limit.

    The limit counts running time: `run_time_s` of the earlier attempts plus this attempt's,
    never time spent queued or with no worker. Reads `cancel_requested` from the database at
    most every `poll_s` besides the heartbeat's copy; `status` and `reason` say why it said yes.
    """

    def __init__(self, factory: sessionmaker[Session], *, job_id: str, heartbeat: Heartbeat,
                 run_time_s: float, max_runtime_s: int, poll_s: float = 2.0) -> None:
        self.factory, self.job_id, self.heartbeat = factory, job_id, heartbeat
        self.max_runtime_s, self.poll_s = max_runtime_s, poll_s
        self._run_time_before, self._t0 = run_time_s, time.monotonic()
        self.status = JobStatus.CANCELLED
        self.reason: str | None = None
        self._next_poll = 0.0

    def _requested(self) -> bool:
        if self.heartbeat.cancel_requested:
            return True
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.poll_s
            with self.factory() as session:
                return bool(session.scalar(sa.select(Job.cancel_requested)
                                           .where(Job.id == self.job_id)))
        return False

    def __call__(self) -> bool:
        running = self._run_time_before + time.monotonic() - self._t0
        if self.heartbeat.lost:
            self.reason = "lease lost to another worker"
        elif running > self.max_runtime_s:
            self.status = JobStatus.TIMED_OUT
            self.reason = (f"stopped after {running:.0f} s of running time: the job's runtime "
                           f"limit is {self.max_runtime_s} s (max_runtime_s)")
        elif self._requested():
            self.reason = "cancelled on request"
        return self.reason is not None


def should_preempt(heartbeat: Heartbeat) -> Callable[[], bool]:
    """The `should_preempt` callable: the worker is shutting down and the lease is still ours
    (a worker that lost its lease must not publish a checkpoint: it is cancelled instead)."""
    return lambda: SHUTTING_DOWN.is_set() and not heartbeat.lost


@dataclass(frozen=True)
class DataFiles:
    train: Path
    val: Path
    test: Path | None


def fetch_datasets(factory: sessionmaker[Session], store: ArtifactStore, *, tenant_id: str,
                   spec: JobSpec, data_dir: Path) -> DataFiles:
    """Download the spec's train/val/test datasets to `data_dir/<split>.jsonl`.

    Raises:
        StreamGuardError: an unknown dataset, or a URI outside the tenant's area (checked
            again here with the contract's one validator: the spec may be old).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path | None] = {"test": None}
    for split, ref in spec.datasets.refs().items():
        if isinstance(ref, DatasetIdRef):
            with factory() as session:
                key = get_dataset_or_raise(session=session, tenant_id=tenant_id,
                                           dataset_id=ref.dataset_id).storage_key
        else:
            key = contract.dataset_uri_key(ref.uri, store=store, tenant_id=tenant_id)
        local = paths[split] = data_dir / f"{split}.jsonl"
        store.get_file(key, local)
    return DataFiles(**paths)  # type: ignore[arg-type]


def fetch_base_model(store: ArtifactStore, *, tenant_id: str, spec: JobSpec,
                     dest: Path) -> Path | None:
    """For `model: job:<id>[/best|/last]`, the tenant's own checkpoint fetched to `dest`.

    The key is built from the claiming tenant's id, so another tenant's job cannot be named.
    """
    ref = contract.parse_model_ref(spec.config.model)
    if ref.kind != "job":
        return None
    assert ref.job_id is not None
    pointer = read_pointer(store, contract.checkpoint_pointer_key(tenant_id, ref.job_id,
                                                                  ref.checkpoint))
    if pointer is None:
        raise StreamGuardError(f"{spec.config.model!r}: that job has no {ref.checkpoint!r} "
                               "checkpoint any more", field="config.model")
    if not dest.is_dir():  # a redelivery fetched it already
        fetch_dir(store, pointer["key_prefix"], dest)
    return dest


def public_message(message: str, work_dir: Path) -> str:
    """`message` without this worker's paths: data files are named by their split."""
    for split in contract.SPLITS:
        message = message.replace(str(work_dir / "data" / f"{split}.jsonl"), f"datasets.{split}")
    return message.replace(str(work_dir.resolve()), "<job>").replace(str(work_dir), "<job>")


OUTCOME_STATUS = {
    StopReason.COMPLETED: JobStatus.COMPLETED,
    StopReason.EARLY_STOPPED: JobStatus.EARLY_STOPPED,
    StopReason.COLLAPSED: JobStatus.COLLAPSED,
    StopReason.NOT_LEARNING: JobStatus.NOT_LEARNING,
    StopReason.NON_FINITE_LOSS: JobStatus.NON_FINITE_LOSS,
    StopReason.CANCELLED: JobStatus.CANCELLED,
}


def outcome_status(result: RunResult, canceller: Canceller) -> tuple[JobStatus, str]:
    """The terminal job status and message for a run's outcome (not PREEMPTED: that one goes
    back to the queue). A cancel by the runtime limit is `timed_out`."""
    if result.outcome == StopReason.CANCELLED and canceller.reason:
        return canceller.status, canceller.reason
    return OUTCOME_STATUS[result.outcome], result.message
