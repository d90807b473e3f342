"""Bounded broker I/O shared by the API (publishing jobs, /readyz) and the workers (re-sending
jobs, the startup check).

A broker that is down or hung must turn a publish or a probe into an error within
`broker.connect_timeout_s` (3 s by default), never a hang. The budget is split into
per-operation socket timeouts (connect, and every read or write on the connection) across one
retry, which rides over a pooled connection that went stale while the broker restarted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamguard.settings import Settings

#: Publish attempts (the first plus retries) sharing `broker.connect_timeout_s`.
PUBLISH_ATTEMPTS = 2
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


#: kombu's `ensure` policy for one publish: one quick retry on a fresh connection.
RETRY_POLICY: dict[str, float] = {"max_retries": PUBLISH_ATTEMPTS - 1, "interval_start": 0,
                                  "interval_step": 0.1, "interval_max": 0.1}


def check_broker(settings: Settings) -> None:
    """Raise unless the broker answers within `broker.connect_timeout_s` (for /readyz).

    The filesystem broker is checked by its queue folder. Other brokers get a real round trip
    (Redis answers a PING when the channel opens; AMQP completes its handshake), with the same
    per-operation socket timeouts as publishing, so a hung broker fails the check instead of
    hanging it.
    """
    if settings.broker.url is None:
        options = settings.broker_transport_options()
        for name in ("data_folder_in", "processed_folder"):
            if not Path(options[name]).is_dir():
                raise FileNotFoundError(f"the filesystem broker's {name} does not exist")
        return
    from kombu.connection import Connection

    timeout = operation_timeout_s(settings)
    options = {**producer_transport_options(settings), "max_retries": 0}  # one attempt
    with Connection(settings.broker.url,  # type: ignore[no-untyped-call]
                    connect_timeout=timeout, transport_options=options) as conn:
        conn.default_channel  # noqa: B018 - connecting and opening the channel is the round trip


def queue_depths(settings: Settings, queues: Sequence[str]) -> dict[str, int]:
    """Messages waiting in each of `queues` (for the API's /metrics), in one connection with
    the probe's timeouts: Redis answers LLENs, AMQP a passive declare, the filesystem broker
    counts files. A queue the broker does not know yet holds nothing (0). Raises when the
    broker does not answer.
    """
    from kombu.connection import Connection
    from kombu.exceptions import ChannelError

    timeout = operation_timeout_s(settings)
    options = {**producer_transport_options(settings), "max_retries": 0}  # one attempt
    depths: dict[str, int] = {}
    with Connection(settings.broker_url_resolved(),  # type: ignore[no-untyped-call]
                    connect_timeout=timeout, transport_options=options) as conn:
        channel = conn.channel()
        for queue in queues:
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True)
                                    .message_count)
            except ChannelError:  # kombu's virtual transports: no such queue yet
                depths[queue] = 0
            except conn.channel_errors:  # AMQP 404 NOT_FOUND closes the channel
                depths[queue] = 0
                channel = conn.channel()
        channel.close()
    return depths
