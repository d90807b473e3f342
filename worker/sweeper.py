"""Recovery that does not wait for the broker: every worker process sweeps for orphaned jobs.

A job is an orphan when it is `running` but its lease expired: its worker was killed, hung, was
stopped or lost the database (claimed and never heartbeated counts too). Brokers do not reliably
hand its message to another worker: Redis only after the visibility timeout (days), the
filesystem broker never, RabbitMQ at once but while the dead worker's lease is still live. So a
daemon thread in every worker (started on `worker_ready`) runs `sweep_once` every
`worker.sweep_interval_s` (with jitter): `requeue_orphan` moves each orphan back to `queued` and
sends its TRAIN_TASK again, or fails it once `worker.max_attempts` workers were lost on it.
Several sweepers at once are safe: each orphan is re-read under a row lock and only one of them
finds it still orphaned.

`install(app)` also turns the worker's warm shutdown (SIGTERM) into the preemption flag that the
running job reads after every optimizer step (`worker.runtime.SHUTTING_DOWN`).
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutting_down
from sqlalchemy.orm import Session, sessionmaker

from streamguard.db.jobs import find_orphans, requeue_orphan
from streamguard.settings import get_settings
from worker import runtime

log = logging.getLogger("streamguard.worker")


class Sweeper:
    """Periodically re-queues (or fails) orphaned jobs; one daemon thread per worker process.

    Args:
        factory: sessions of the jobs database (its own, one per sweep step).
        enqueue: sends a job's TRAIN_TASK again (`runtime.make_enqueue`).
        interval_s: seconds between sweeps (each wait is jittered by ±20 %, so the workers'
            sweeps spread out).
        max_attempts: the lost worker that makes this many ends the job `failed`.
    """

    def __init__(self, factory: sessionmaker[Session], *, enqueue: runtime.Enqueue,
                 interval_s: float, max_attempts: int) -> None:
        self.factory, self.enqueue = factory, enqueue
        self.interval_s, self.max_attempts = interval_s, max_attempts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sweep_once(self) -> dict[str, str]:
        """One pass: {job_id: new status} for every orphan this sweeper settled."""
        with self.factory() as session:
            orphans = find_orphans(session=session)
        done: dict[str, str] = {}
        for job_id in orphans:
            try:
                with self.factory() as session, session.begin():
                    status = requeue_orphan(session=session, job_id=job_id,
                                            enqueue=self.enqueue, max_attempts=self.max_attempts)
            except Exception as exc:  # noqa: BLE001 - the database or broker is away: next sweep
                log.warning("sweeper: job %s stays orphaned until the next sweep: %s",
                            job_id, exc)
                continue
            if status is not None:
                done[job_id] = status.value
                log.warning("sweeper: job %s had lost its worker (lease expired): now %s",
                            job_id, status.value)
        return done

    def _loop(self) -> None:
        # The first sweep comes soon after start (a restarted worker finds its own orphans).
        wait = random.uniform(0.1, 0.5) * self.interval_s
        while not self._stop.wait(wait):
            if runtime.SHUTTING_DOWN.is_set():
                return
            try:
                self.sweep_once()
            except Exception as exc:  # noqa: BLE001 - never let the thread die
                log.warning("sweeper: sweep failed: %s", exc)
            wait = self.interval_s * random.uniform(0.8, 1.2)


_sweeper: Sweeper | None = None


def install(app: Celery) -> None:
    """Start the sweeper when the worker is ready; preempt the running job on warm shutdown."""

    @worker_ready.connect(weak=False)
    def _start_sweeper(**_: Any) -> None:
        global _sweeper
        settings = get_settings()
        _sweeper = Sweeper(runtime.session_factory(settings.db.url),
                           enqueue=runtime.make_enqueue(app, settings.worker.queue),
                           interval_s=settings.worker.sweep_interval_s,
                           max_attempts=settings.worker.max_attempts)
        _sweeper.start()
        log.info("sweeper: every %s s, max %s attempts per job",
                 settings.worker.sweep_interval_s, settings.worker.max_attempts)

    @worker_shutting_down.connect(weak=False)
    def _preempt(**_: Any) -> None:
        # Runs in the signal handler: only set flags here (the job reads it after its step).
        runtime.SHUTTING_DOWN.set()
        if _sweeper is not None:
            _sweeper.stop()
