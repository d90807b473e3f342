"""Worker-side metric sink: every record goes to the database (fenced), then to Redis pub/sub.

The row is committed first and only its id is published on `job:{job_id}:events`, so an SSE
subscriber that joins late (or misses a message) backfills from the database and never sees an
event the database does not have. A stale lease token raises `StaleLease` out of the sink: the
training loop aborts, which is right, because another worker owns the job now.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.orm import Session

from streamguard.contract import EventKind, JobStatus, events_channel
from streamguard.db.jobs import assert_fresh, get_job_or_raise, record_progress, transition
from streamguard.db.metrics import (
    add_event,
    epoch_recorded,
    step_recorded,
    upsert_checkpoint,
    upsert_epoch,
    upsert_step,
)
from streamguard.settings import RedisSettings, Settings
from streamguard.trackers import OnFailure, TrackerSink, build_trackers

log = logging.getLogger("streamguard.worker")

#: Seconds publishing pauses after a Redis failure.
PUBLISH_BACKOFF_S = 10.0


class EventPublisher(Protocol):
    def publish(self, job_id: str, event_id: int) -> None:
        """Announce that event `event_id` of `job_id` is in the database."""


class NullPublisher:
    """No Redis configured: SSE streams poll the database instead."""

    def publish(self, job_id: str, event_id: int) -> None:
        pass


class RedisEventPublisher:
    """Publishes `{"id": event_id}` on `job:{job_id}:events`. Failures are logged, not raised:
    the event is already committed, and SSE readers fall back to reading the database.

    Every call is bounded by the socket and connect timeouts of `settings.redis`, and after a
    failure publishing pauses for `backoff_s` (one warning per outage), so a hung Redis costs a
    training run one timeout, not one per event.
    """

    def __init__(self, redis_url: str, settings: RedisSettings | None = None, *,
                 backoff_s: float = PUBLISH_BACKOFF_S) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        settings = settings or RedisSettings()
        # No retries: redis-py's default (3, with backoff) would multiply every timeout by 4.
        self.client = redis.Redis.from_url(
            redis_url, socket_timeout=settings.socket_timeout_s,
            socket_connect_timeout=settings.connect_timeout_s, retry=Retry(NoBackoff(), 0))
        self.backoff_s = backoff_s
        self._paused_until = 0.0

    def publish(self, job_id: str, event_id: int) -> None:
        if time.monotonic() < self._paused_until:
            return  # Redis failed a moment ago; readers poll the database meanwhile
        try:
            self.client.publish(events_channel(job_id), json.dumps({"id": event_id}))
        except Exception as exc:  # noqa: BLE001 - pub/sub is best effort by design
            if not self._paused_until:
                log.warning("could not publish event %s of job %s (%s); pausing publishes "
                            "for %.0f s at a time until Redis answers", event_id, job_id,
                            type(exc).__name__, self.backoff_s)
            self._paused_until = time.monotonic() + self.backoff_s
            return
        if self._paused_until:
            log.info("Redis answers again; publishing job events resumed")
            self._paused_until = 0.0

    def close(self) -> None:
        self.client.close()


def make_publisher(redis: str | RedisSettings | None) -> EventPublisher:
    """A Redis publisher for `settings.redis` (or a bare URL, with the default timeouts)."""
    if isinstance(redis, RedisSettings):
        return RedisEventPublisher(redis.url, redis) if redis.url else NullPublisher()
    return RedisEventPublisher(redis) if redis else NullPublisher()


def rollback_reason(payload: Mapping[str, Any]) -> str:
    """The transition reason of a `rollback` event (RollbackPayload)."""
    return (f"rollback {payload['rollback']} of {payload['max_rollbacks']} at step "
            f"{payload['step']} (epoch {payload['epoch']}): back to the best checkpoint (epoch "
            f"{payload['to_epoch']}, step {payload['to_step']}), learning rate x"
            f"{payload['lr_factor']:.4g}; {payload['reason']}")


class DbMetricSink:
    """MetricSink writing epochs, events and checkpoint records of one leased job. A `rollback`
    event also records a running -> running transition with its reason.

    Args:
        session_factory: makes the sink's own session (one per write, committed at once).
        job_id: the job.
        token: the fencing token from `claim_job`; every write is checked against it.
        publisher: announces committed event ids (`NullPublisher` without Redis).

    Raises:
        StaleLease: from any write once another worker has claimed the job.
    """

    def __init__(self, session_factory: Callable[[], Session], job_id: str, token: int,
                 publisher: EventPublisher | None = None) -> None:
        self.session_factory = session_factory
        self.job_id = job_id
        self.token = token
        self.publisher = publisher or NullPublisher()
        self.selection_metric = "f1"

    def _write(self, kind: str, payload: dict[str, Any],
               fenced: Callable[[Session], None]) -> int:
        with self.session_factory() as session, session.begin():
            fenced(session)  # the fenced writes; they lock the job row until commit
            event_id = add_event(session=session, job_id=self.job_id, kind=kind,
                                 payload=payload).id
        self.publisher.publish(self.job_id, event_id)
        return event_id

    def start(self, config: Mapping[str, Any]) -> None:
        self.selection_metric = config.get("config", {}).get("selection_metric", "f1")
        log.info("job %s: training starts at epoch %s (token %s)", self.job_id,
                 config.get("start_epoch", 0), self.token)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        record = dict(record)
        epoch = int(record["epoch"])

        def fenced(session: Session) -> None:
            assert_fresh(session=session, job_id=self.job_id, token=self.token)  # row locked
            if epoch_recorded(session=session, job_id=self.job_id, epoch=epoch):
                # An earlier attempt recorded this epoch, then lost the job before the epoch's
                # checkpoint became the resume point: this attempt ran it again. The event and
                # the replaced row say so; a reader keeps the later values.
                record["replayed"] = True
            upsert_epoch(session=session, job_id=self.job_id, token=self.token, epoch=epoch,
                         record=record)
            is_best = bool(record.get("is_best"))
            record_progress(session=session, job_id=self.job_id, token=self.token,
                            current_epoch=epoch, best_epoch=epoch if is_best else None,
                            best_metric=record.get(self.selection_metric) if is_best else None)

        self._write(EventKind.EPOCH.value, record, fenced)

    def log_step(self, record: Mapping[str, Any]) -> None:
        self.log_steps([record])

    def log_steps(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Several step records in ONE transaction (one fencing check, one commit), each with
        its row and its `step` event, in order; published after the commit."""
        if not records:
            return
        rows = [dict(r) for r in records]
        with self.session_factory() as session, session.begin():
            assert_fresh(session=session, job_id=self.job_id, token=self.token)  # row locked
            event_ids = []
            for record in rows:
                step = int(record["step"])
                if step_recorded(session=session, job_id=self.job_id, step=step):
                    record["replayed"] = True  # a resumed attempt ran it again (log_epoch)
                upsert_step(session=session, job_id=self.job_id, token=self.token, step=step,
                            epoch=int(record["epoch"]), record=record,
                            total_steps=record.get("total_steps"))
                event_ids.append(add_event(session=session, job_id=self.job_id,
                                           kind=EventKind.STEP.value, payload=record).id)
        for event_id in event_ids:
            self.publisher.publish(self.job_id, event_id)

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        payload = dict(payload)

        def fenced(session: Session) -> None:
            if kind == EventKind.ROLLBACK.value:
                assert_fresh(session=session, job_id=self.job_id, token=self.token)  # row locked
                # The job stays running; the transition row (and its status event) says why.
                transition(session=session, job=get_job_or_raise(session=session,
                                                                 job_id=self.job_id),
                           to_status=JobStatus.RUNNING, reason=rollback_reason(payload))
                return
            if kind != EventKind.CHECKPOINT.value:
                assert_fresh(session=session, job_id=self.job_id, token=self.token)
                return
            upsert_checkpoint(  # fenced itself
                session=session, job_id=self.job_id, token=self.token, name=payload["name"],
                epoch=int(payload["epoch"]), key_prefix=payload["key_prefix"],
                size_bytes=int(payload["size_bytes"]),
                # The row keeps the pointer payload's archive key and sha256 (the API lists them).
                manifest={**payload["manifest"], "archive_key": payload["archive_key"],
                          "sha256": payload["sha256"],
                          **({"step": payload["step"]} if "step" in payload else {})},
                metrics=payload.get("metrics", {}))

        self._write(kind, payload, fenced)

    def finish(self, outcome: str, message: str) -> None:
        pass  # the task finishes the job (fenced), which also records the status event


def job_trackers(settings: Settings, names: Sequence[str], *, job_id: str, tenant_id: str,
                 job_name: str | None, work_dir: Path,
                 on_failure: OnFailure) -> list[TrackerSink]:
    """The experiment trackers a job's config names, set up from `settings.trackers`: one
    MLflow run per job (found again by the job id when an attempt resumes), TensorBoard files
    under `tensorboard_dir/<tenant>/<job>`, the exported model from `work_dir/model`. A failure
    is reported through `on_failure` (a `warning` event of the job), never raised."""
    return build_trackers(
        names, settings.trackers, run_key=job_id, run_name=job_name or job_id,
        tensorboard_dir=settings.trackers.tensorboard_dir / tenant_id / job_id,
        model_dir=work_dir / "model", on_failure=on_failure,
        tags={"streamguard.job_id": job_id, "streamguard.tenant_id": tenant_id})
