"""What the train_job task needs around `streamguard.training.run`: claiming, heartbeats,
dataset files, cancellation and the final status. Keeps `worker/tasks.py` a thin adapter.

Redelivery (a worker died, the broker hands the message to another one) is the normal path:
`claim_job` refuses a job whose lease is still live and reclaims one whose lease expired with a
new fencing token; `run()` then resumes from the store's `checkpoints/last.json`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from streamguard import contract
from streamguard.contract import DatasetIdRef, JobSpec, JobStatus
from streamguard.db import Job, make_engine, make_session_factory
from streamguard.db.datasets import get_dataset_or_raise
from streamguard.db.jobs import claim_job, finish_job, get_job_or_raise, heartbeat
from streamguard.db.models import utcnow
from streamguard.errors import StreamGuardError
from streamguard.manifest import fetch_dir, read_pointer
from streamguard.storage import ArtifactStore
from streamguard.training import RunResult, StopReason

log = logging.getLogger("streamguard.worker")

@lru_cache
def session_factory(db_url: str) -> sessionmaker[Session]:
    """One engine (connection pool) per database URL per process."""
    return make_session_factory(make_engine(db_url))


def worker_id(hostname: str | None = None) -> str:
    """`host:pid`, recorded as the lease owner."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    token: int
    tenant_id: str
    spec: dict[str, Any]
    started_at: datetime


def claim(factory: sessionmaker[Session], *, job_id: str, owner: str, lease_s: int) -> Claim | None:
    """Take the job's lease (committed), or None when it is finished, cancelled or leased."""
    with factory() as session, session.begin():
        token = claim_job(session=session, job_id=job_id, worker_id=owner, lease_s=lease_s)
        if token is None:
            return None
        job = get_job_or_raise(session=session, job_id=job_id)
        return Claim(token, job.tenant_id, dict(job.spec), job.started_at or utcnow())


def finish(factory: sessionmaker[Session], *, job_id: str, token: int, status: JobStatus,
           message: str, **extra: Any) -> None:
    """Fenced move to a terminal status; `transition` also records the `status` event."""
    with factory() as session, session.begin():
        finish_job(session=session, job_id=job_id, token=token, status=status, message=message,
                   **extra)


class Heartbeat:
    """A daemon thread renewing the lease every `interval_s` with its own sessions.

    It remembers the last `cancel_requested` seen and sets `lost` when the lease is gone (the
    token went stale or the job left `running`); then it stops beating.
    """

    def __init__(self, factory: sessionmaker[Session], *, job_id: str, token: int,
                 lease_s: int, interval_s: float) -> None:
        self.factory, self.job_id, self.token = factory, job_id, token
        self.lease_s, self.interval_s = lease_s, interval_s
        self.cancel_requested = False
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{job_id}",
                                        daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def beat(self) -> None:
        try:
            with self.factory() as session, session.begin():
                result = heartbeat(session=session, job_id=self.job_id, token=self.token,
                                   lease_s=self.lease_s)
        except Exception as exc:  # noqa: BLE001 - a DB blip: try again next beat
            log.warning("job %s: heartbeat failed: %s", self.job_id, exc)
            return
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

    Reads `cancel_requested` from the database at most every `poll_s` (the loop asks every few
    optimizer steps) besides the heartbeat's copy; `reason` says why it said yes.
    """

    def __init__(self, factory: sessionmaker[Session], *, job_id: str, heartbeat: Heartbeat,
                 started_at: datetime, max_runtime_s: int, poll_s: float = 2.0) -> None:
        self.factory, self.job_id, self.heartbeat = factory, job_id, heartbeat
        self.started_at, self.max_runtime_s, self.poll_s = started_at, max_runtime_s, poll_s
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
        elapsed = (utcnow() - self.started_at).total_seconds()
        if self.heartbeat.lost:
            self.reason = "lease lost to another worker"
        elif elapsed > self.max_runtime_s:
            self.reason = (f"stopped after {elapsed:.0f} s: the job's runtime limit is "
                           f"{self.max_runtime_s} s (max_runtime_s)")
        elif self._requested():
            self.reason = "cancelled on request"
        return self.reason is not None


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
    StopReason.NON_FINITE_LOSS: JobStatus.NON_FINITE_LOSS,
    StopReason.CANCELLED: JobStatus.CANCELLED,
}


def outcome_status(result: RunResult, canceller: Canceller) -> tuple[JobStatus, str]:
    """The job status and message for a run's outcome."""
    if result.outcome == StopReason.CANCELLED and canceller.reason:
        return JobStatus.CANCELLED, canceller.reason
    return OUTCOME_STATUS[result.outcome], result.message
