"""The API's side of the broker: a Celery app used only to send tasks by name.

The API never imports `worker`; it sends the contract's `TRAIN_TASK` by name with the job id
only, configured from the same `celery_config` as the workers.

Publishing is bounded by `broker.connect_timeout_s` (3 s by default) in total, so a broker that
is down or hung turns a submit into a 503 within seconds instead of a request that hangs and
then queues the job after its client gave up. The budget is split into per-operation socket
timeouts (connect, and every read or write on the connection) across one retry, which rides
over a pooled connection that went stale while the broker restarted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

from streamguard.contract import TRAIN_TASK, celery_config
from streamguard.settings import Settings

#: Sends one job id to the workers; raises when the broker refuses it.
Enqueue = Callable[[str], None]

#: Publish attempts (the first plus retries) sharing `broker.connect_timeout_s`.
PUBLISH_ATTEMPTS = 2
#: Producer connections kept: above the API's thread pool (40), so no submit waits for one.
PRODUCER_POOL_LIMIT = 64


def operation_timeout_s(settings: Settings) -> float:
    """Seconds one broker operation (connect, handshake, publish) may take.

    A hung broker accepts TCP connections and then never answers, so the worst publish is a
    connect + handshake + publish per attempt; the split keeps their sum inside the budget.
    """
    return max(0.2, settings.broker.connect_timeout_s / (PUBLISH_ATTEMPTS + 1))


def producer_transport_options(settings: Settings) -> dict[str, Any]:
    """`broker_transport_options` for a short-lived producer or probe: the shared options plus
    socket timeouts (Redis; ignored by other transports) and a single connection attempt."""
    timeout = operation_timeout_s(settings)
    options = dict(settings.broker_transport_options())
    if settings.broker.url is not None:
        options.update({"socket_timeout": timeout, "socket_connect_timeout": timeout,
                        "max_retries": 1, "interval_start": 0, "interval_step": 0.1,
                        "interval_max": 0.2, "connect_retries_timeout": timeout})
    return options


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


#: kombu's `ensure` policy for one publish: one quick retry on a fresh connection.
RETRY_POLICY: dict[str, float] = {"max_retries": PUBLISH_ATTEMPTS - 1, "interval_start": 0,
                                  "interval_step": 0.1, "interval_max": 0.1}


def celery_enqueue(app: Celery, queue: str) -> Enqueue:
    """An `Enqueue` that publishes through `app` (from `build_celery`); a dead or hung broker
    fails within the publish budget (see the module doc) instead of hanging."""

    def enqueue(job_id: str) -> None:
        app.send_task(TRAIN_TASK, args=[job_id], queue=queue, retry=True,
                      retry_policy=RETRY_POLICY)

    return enqueue


def check_broker(settings: Settings) -> None:
    """Raise unless the broker answers within `broker.connect_timeout_s` (for /readyz).

    The filesystem broker is checked by its queue folder. Other brokers get a real round trip
    (Redis answers a PING when the channel opens; AMQP completes its handshake), with the same
    per-operation socket timeouts as publishing, so a hung broker fails the check instead of
    hanging it.
    """
    from pathlib import Path

    if settings.broker.url is None:
        folder = Path(settings.broker_transport_options()["data_folder_in"])
        if not folder.is_dir():
            raise FileNotFoundError("the filesystem broker's queue folder does not exist")
        return
    from kombu.connection import Connection

    timeout = operation_timeout_s(settings)
    options = {**producer_transport_options(settings), "max_retries": 0}  # one attempt
    with Connection(settings.broker.url,  # type: ignore[no-untyped-call]
                    connect_timeout=timeout, transport_options=options) as conn:
        conn.default_channel  # noqa: B018 - connecting and opening the channel is the round trip
