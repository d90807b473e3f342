"""The Celery application of the GPU workers, configured once from `get_settings()`.

    celery -A worker.celery_app:app worker --pool=solo --concurrency=1 -Q gpu --loglevel=INFO

One process per GPU (`--concurrency=1`), one reserved task at a time (`prefetch_multiplier=1`),
and late acks. Recovery does not rely on the broker redelivering a dead worker's message (Redis
waits for the visibility timeout, the filesystem broker never does): every worker runs a
sweeper (`worker.sweeper`) that re-queues jobs whose lease expired, and the next worker reclaims
the job and resumes from the `last` checkpoint. The database lease (with fencing) is the real
guard against a job running twice. SIGTERM (warm shutdown) preempts the running job at its next
optimizer step and puts it back in the queue.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
)

from streamguard.contract import TRAIN_TASK, celery_config
from streamguard.logs import job_id_var
from streamguard.settings import get_settings
from worker import metrics, runtime, sweeper
from worker.logs import install_json_logging

log = logging.getLogger("streamguard.worker")

settings = get_settings()
settings.ensure_dirs()  # the filesystem broker needs its folders before the first poll

app = Celery("streamguard", include=["worker.tasks"])
app.conf.update(
    **celery_config(settings),
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,  # job state lives in the database, not in a result backend
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)


@worker_init.connect  # the solo pool's one process
@worker_process_init.connect  # each child of a prefork pool
def _torch_threads(**_kwargs: Any) -> None:
    """Several workers on one machine's CPUs each take their share (`worker.torch_threads`)."""
    wanted = get_settings().worker.torch_threads
    threads = runtime.set_torch_threads(wanted)
    log.info("torch: %d intra-op thread(s) (worker.torch_threads: %s)", threads,
             "torch's default" if wanted is None else wanted)


@worker_init.connect
def _serve_metrics(sender: Any = None, **_kwargs: Any) -> None:
    """The Prometheus port (`worker.metrics_port`; worker/metrics.py) of this worker."""
    metrics.serve(get_settings().worker, getattr(sender, "pool_cls", None))


install_json_logging(settings.log)  # SG_LOG__FORMAT=json; text: Celery's format, as before


@task_prerun.connect
def _bind_job(task: Any = None, args: Any = None, **_kwargs: Any) -> None:
    """Every log line of a training task (and of the threads it starts) names its job."""
    if getattr(task, "name", None) == TRAIN_TASK and args:
        job_id_var.set(str(args[0]))


@task_postrun.connect
def _unbind_job(**_kwargs: Any) -> None:
    job_id_var.set(None)


sweeper.install(app)  # the orphan sweeper on worker_ready; SIGTERM preempts the running job
import worker.preflight  # noqa: F401,E402 - refuse to start misconfigured (worker_init)
