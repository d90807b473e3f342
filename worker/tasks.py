"""Celery tasks. `train_job` is a thin adapter: claim, build collaborators, run, record.

The training itself is `streamguard.training.run`; the helpers are in `worker.runtime`, the
sweeper that re-queues jobs of lost workers in `worker.sweeper`.
"""

from __future__ import annotations

import logging
import shutil
from contextlib import closing

from celery import Task

from streamguard import contract
from streamguard.contract import TRAIN_TASK, JobStatus
from streamguard.db.jobs import StaleLease
from streamguard.errors import StreamGuardError
from streamguard.settings import get_settings
from streamguard.sinks import FanOutSink
from streamguard.storage import store_from_uri
from streamguard.training import run
from worker import runtime
from worker.celery_app import app
from worker.metrics import WORKER_METRICS, PrometheusSink, TimedStore
from worker.sinks import DbMetricSink, job_trackers, make_publisher
from worker.write_behind import WriteBehindSteps

log = logging.getLogger("streamguard.worker")


@app.task(bind=True, name=TRAIN_TASK)
def train_job(self: Task, job_id: str) -> str | None:
    """Train job `job_id`; returns the status it left the job in (`queued` when preempted), or
    None when this worker did not own it."""
    settings = get_settings()
    factory = runtime.session_factory(settings.db.url)
    enqueue = runtime.make_enqueue(app, settings.worker.queue)
    if runtime.SHUTTING_DOWN.is_set():  # a delivery to a worker on its way out: pass it on
        enqueue(job_id)
        return None
    claim = runtime.claim_or_defer(
        factory, job_id=job_id, owner=runtime.worker_id(self.request.hostname),
        lease_s=settings.worker.lease_s, max_attempts=settings.worker.max_attempts,
        enqueue=enqueue, retry_s=settings.worker.sweep_interval_s)
    if claim is None:  # finished, cancelled, or leased elsewhere (sent again for later)
        return None
    token = claim.token
    publisher = make_publisher(settings.redis)  # announces committed events to SSE readers
    publisher.publish(job_id, claim.event_id)  # `running`
    # A folder per attempt: the store's `last` is the resume point, never another process's
    # leftovers (a killed worker's half-written files, a stopped one that may still write).
    work_dir = settings.worker.work_dir / job_id / f"attempt-{token}"
    plain = store_from_uri(settings.storage.uri, endpoint_url=settings.storage.s3_endpoint_url)
    store = TimedStore(plain)  # checkpoint uploads timed for the worker's metrics
    # Step metrics are committed behind the training thread; every other record on it, fenced.
    # The experiment trackers the job names join after it once the spec is read.
    steps = WriteBehindSteps(DbMetricSink(factory, job_id, token, publisher))
    sink = FanOutSink([steps, PrometheusSink(WORKER_METRICS, uploads=store)])
    hb = runtime.Heartbeat(factory, job_id=job_id, token=token, lease_s=settings.worker.lease_s,
                           interval_s=settings.worker.heartbeat_s)
    status: JobStatus | None = None  # None: preempted, back to the queue
    with hb, closing(sink):  # closing: trackers, then steps still queued, before the status
        try:
            spec = contract.load_job_spec(claim.spec)  # the one validation on this side
            sink.sinks += job_trackers(  # a tracker's failure: a warning event, never raised
                settings, spec.config.trackers, job_id=job_id, tenant_id=claim.tenant_id,
                job_name=spec.name, work_dir=work_dir,
                on_failure=lambda payload: steps.event("warning", payload))
            limit = settings.worker.max_job_runtime_s
            cancel = runtime.Canceller(factory, job_id=job_id, heartbeat=hb,
                                       run_time_s=claim.run_time_s,
                                       max_runtime_s=min(spec.max_runtime_s or limit, limit))
            data = runtime.fetch_datasets(factory, store, tenant_id=claim.tenant_id, spec=spec,
                                          data_dir=work_dir / "data")
            base = runtime.fetch_base_model(store, tenant_id=claim.tenant_id, spec=spec,
                                            dest=work_dir / "base-model")
            result = run(spec.config, train_path=data.train, val_path=data.val,
                         test_path=data.test, work_dir=work_dir, sink=sink, store=store,
                         store_prefix=contract.job_prefix(claim.tenant_id, job_id),
                         should_cancel=cancel, should_preempt=runtime.should_preempt(hb),
                         base_model=base, created_by=f"StreamGuard job {job_id}",
                         cache=plain if settings.worker.token_cache else None,
                         cache_namespace=claim.tenant_id)
            if result.outcome != runtime.PREEMPTED:
                status, message = runtime.outcome_status(result, cancel)
            test = result.test_metrics  # the best checkpoint's, so it names that epoch
            extra = {"best_epoch": result.best_epoch, "best_metric": result.best_metric,
                     "test_metrics": {"best_epoch": result.best_epoch, **test} if test else None}
        except StaleLease as exc:
            log.warning("job %s: %s; abandoning this attempt", job_id, exc)
            shutil.rmtree(work_dir, ignore_errors=True)
            return None
        except StreamGuardError as exc:  # bad data or config: the user's to fix, no retry
            status, extra = JobStatus.FAILED, {}
            message = runtime.public_message(exc.message, work_dir)
        except Exception as exc:  # a bug or an infrastructure failure: fail, log, no retry
            log.exception("job %s failed", job_id)  # the details stay in the operators' log
            status, extra = JobStatus.FAILED, {}
            message = (f"internal error in the worker ({type(exc).__name__}); the operators' "
                       f"log has the details under job {job_id}")
    try:
        if status is None:
            runtime.release(factory, job_id=job_id, token=token, run_time_s=hb.pending_s(),
                            enqueue=enqueue, publisher=publisher)
            log.info("job %s: preempted (%s); back in the queue", job_id, result.message)
            shutil.rmtree(work_dir, ignore_errors=True)  # `last` is in the store
            return JobStatus.QUEUED.value
        runtime.finish(factory, job_id=job_id, token=token, status=status, message=message,
                       run_time_s=hb.pending_s(), publisher=publisher, **extra)
    except StaleLease as exc:
        log.warning("job %s: ended as %s but %s; abandoning this attempt", job_id,
                    status or "preempted", exc)
        shutil.rmtree(work_dir, ignore_errors=True)
        return None
    shutil.rmtree(work_dir.parent, ignore_errors=True)  # checkpoints and model are in the store
    log.info("job %s: %s: %s", job_id, status, message)
    return status.value
