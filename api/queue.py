"""The API's side of the broker: a Celery app used only to send tasks by name.

The API never imports `worker`; it sends the contract's `TRAIN_TASK` by name with the job id
only, configured from the same `celery_config` as the workers.

Publishing is bounded (streamguard/broker.py): a broker that is down or hung turns a submit
into a 503 within `broker.connect_timeout_s`, never a request that hangs and then queues the
job after its client gave up.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery

from streamguard.broker import (
    RETRY_POLICY,
    operation_timeout_s,
    producer_transport_options,
)
from streamguard.contract import TRAIN_TASK, celery_config
from streamguard.settings import Settings

#: Sends one job id to the workers; raises when the broker refuses it.
Enqueue = Callable[[str], None]

#: Producer connections kept: above the API's worker threads (`api.threads`, by default the
#: database pool's 20), so no submit waits for one.
PRODUCER_POOL_LIMIT = 64


def build_celery(settings: Settings) -> Celery:
    """A producer-only Celery app with the workers' broker settings and bounded publishing."""
    app = Celery("streamguard-api")
    app.conf.update(celery_config(settings))
    timeout = operation_timeout_s(settings)
    app.conf.update(
        broker_transport_options=producer_transport_options(settings),
        broker_connection_timeout=timeout,  # AMQP connect + handshake
        broker_connection_retry=False,
        broker_connection_max_retries=1,
        broker_pool_limit=PRODUCER_POOL_LIMIT,
        broker_heartbeat=0,  # a producer has no event loop to send AMQP heartbeats
    )
    return app


def celery_enqueue(app: Celery, queue: str) -> Enqueue:
    """An `Enqueue` that publishes through `app` (from `build_celery`); a dead or hung broker
    fails within the publish budget (streamguard/broker.py) instead of hanging."""

    def enqueue(job_id: str) -> None:
        app.send_task(TRAIN_TASK, args=[job_id], queue=queue, retry=True,
                      retry_policy=RETRY_POLICY)

    return enqueue

