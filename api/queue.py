"""The API's side of the broker: a Celery app used only to send tasks by name.

The API never imports `worker`; it sends the contract's `TRAIN_TASK` by name with the job id
only, configured from the same `celery_config` as the workers.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from streamguard.contract import TRAIN_TASK, celery_config
from streamguard.settings import Settings

#: Sends one job id to the workers; raises when the broker refuses it.
Enqueue = Callable[[str], None]


def build_celery(settings: Settings) -> Celery:
    """A producer-only Celery app with the workers' broker settings."""
    app = Celery("streamguard-api")
    app.conf.update(celery_config(settings))
    return app


def celery_enqueue(app: Celery, queue: str) -> Enqueue:
    """An `Enqueue` that publishes through `app`; a dead broker fails fast instead of hanging."""

    def enqueue(job_id: str) -> None:
        app.send_task(TRAIN_TASK, args=[job_id], queue=queue, retry=True,
                      retry_policy={"max_retries": 2, "interval_start": 0,
                                    "interval_step": 0.5, "interval_max": 1})

    return enqueue
