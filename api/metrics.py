"""Prometheus metrics of the API process, served at GET /metrics (docs/operations.md).

    curl -s http://127.0.0.1:8000/metrics | grep ^streamguard_

Each app has its own registry (`ApiMetrics`), so two apps in one process (tests) count apart:

- `MetricsMiddleware` counts every HTTP request and times it, labelled by method, route
  TEMPLATE (`/v1/jobs/{job_id}`, never the raw path: bounded label values; a path no route
  matches is `unmatched`) and status code. An SSE request's duration is its stream's.
- `StateCollector` reads what the process does not count itself, at scrape time only: jobs per
  status (one GROUP BY over every tenant), messages waiting in the training and inference queues
  (one broker round trip, bounded by `broker.connect_timeout_s`), and the open SSE streams of
  this process (the event hub's listeners). A source that fails is left out of that scrape and
  `streamguard_metrics_source_up{source}` says 0.

Several API processes (`streamguard api --workers N`, N > 1): each scrape reaches ONE of them,
so per-process counters would jump between processes. The launcher then sets
PROMETHEUS_MULTIPROC_DIR (a fresh, empty folder) before the processes start, prometheus_client
keeps every counter and histogram in memory-mapped files there, and GET /metrics sums the files
of every process (`MultiProcessCollector`), those of exited processes too. The process, GC and
platform collectors are left out in that mode (they would describe whichever process answered).
The state collector runs in the answering process only, so jobs and queue depths are read once
per scrape, and the open SSE streams are a `livesum` gauge that each process updates as its
streams open and close (summed over the live processes).

No label names a tenant, a job or a key: /metrics answers without an API key (`api.metrics`
turns it off).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamguard.broker import queue_depths
from streamguard.contract import JobStatus
from streamguard.db.jobs import count_all_jobs_by_status
from streamguard.settings import Settings

log = logging.getLogger(__name__)

#: The route label of a request that matched no route (a 404 or a scanner's probe).
UNMATCHED = "unmatched"
#: Methods kept as they are in the `method` label; anything else is `other`.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Request durations: from a cached GET (milliseconds) to an upload or prediction (seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SSE_HELP = "Open SSE event streams (GET /v1/jobs/{id}/events)"


def multiprocess_mode() -> bool:
    """Whether prometheus_client keeps values in PROMETHEUS_MULTIPROC_DIR's files: decided once,
    when it was first imported (so the variable must be set before that, by the launcher)."""
    return values.ValueClass is not values.MutexValue


class ApiMetrics:
    """The registry of one app: process metrics, the HTTP counters, and the state collector
    (`watch_state`, once the lifespan has built the database and the event hub).

    In multiprocess mode the registry holds the `MultiProcessCollector` instead of the counters
    themselves (their values are in the shared files; registering them too would count this
    process twice), and `sse_streams` is the livesum gauge of this process's open streams.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = multiprocess_mode()
        own: CollectorRegistry | None = self.registry
        self.sse_streams: Gauge | None = None
        if self.multiprocess:
            multiprocess.MultiProcessCollector(self.registry)
            own = None
            self.sse_streams = Gauge("streamguard_sse_connections", SSE_HELP + ", summed over "
                                     "the live API processes.", registry=None,
                                     multiprocess_mode="livesum")
        else:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)
        self.requests = Counter(
            "streamguard_http_requests", "HTTP requests answered, by method, route template "
            "and status code.", ["method", "route", "status"], registry=own)
        self.duration = Histogram(
            "streamguard_http_request_duration_seconds", "Time from a request's arrival to the "
            "end of its response (of the whole stream for SSE), by method, route template and "
            "status code.", ["method", "route", "status"], buckets=DURATION_BUCKETS,
            registry=own)
        self._state: StateCollector | None = None
        #: (method, route, status) -> its counter and histogram children; bounded like the labels.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def watch_state(self, collector: StateCollector) -> None:
        """Add (or replace, on a second lifespan) the collector of jobs, queues and streams."""
        if self._state is not None:
            self.registry.unregister(self._state)
        self._state = collector
        self.registry.register(collector)

    def set_sse_streams(self, n: int) -> None:
        """This process's open SSE streams (multiprocess mode: the event hub calls it)."""
        if self.sse_streams is not None:
            self.sse_streams.set(n)

    def process_exiting(self) -> None:
        """Multiprocess mode: drop this process's live gauges (its counters stay counted)."""
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method if method in KNOWN_METHODS else "other", route, status)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds the key each time: once here
            labels = (key[0], route, str(status))
            children = self._children[key] = (self.requests.labels(*labels),
                                              self.duration.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type (runs the state collector)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status (pure ASGI).

    Sits outside the catch-all, so an unexpected exception is counted as the 500 it became;
    an exception that still escapes (the response had started) counts as 500 too.
    """

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None)  # set by the router on a match
            self.metrics.observe(str(scope.get("method", "")), route or UNMATCHED, status,
                                 time.perf_counter() - start)


class StateCollector:
    """Jobs by status, queue depths and open SSE streams, read at scrape time.

    Args:
        settings: the app's settings (broker and queue names).
        session_factory: opens a read session for the GROUP BY.
        sse_connections: the number of open SSE streams (the event hub's listeners); None in
            multiprocess mode, where the livesum gauge of `ApiMetrics` reports them.
    """

    def __init__(self, settings: Settings, session_factory: Callable[[], Any],
                 sse_connections: Callable[[], int] | None) -> None:
        self.settings = settings
        self.session_factory = session_factory
        self.sse_connections = sse_connections

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("streamguard_metrics_source_up", "1 when this scrape could read "
                               "the source (database, broker), else 0 (its metrics are left "
                               "out).", labels=["source"])
        try:
            with self.session_factory() as session:
                counts = count_all_jobs_by_status(session=session)
        except Exception:  # noqa: BLE001 - a scrape must still answer; the reason is logged
            log.warning("metrics: jobs by status not read", exc_info=True)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            jobs = GaugeMetricFamily("streamguard_jobs", "Jobs of every tenant by status, "
                                     "counted in the database at scrape time.", labels=["status"])
            for status in JobStatus:
                jobs.add_metric([status.value], counts.get(status.value, 0))
            yield jobs
        queues = {"train": self.settings.worker.queue, "inference": self.settings.inference.queue}
        try:
            depths = queue_depths(self.settings, list(queues.values()))
        except Exception:  # noqa: BLE001 - as above
            log.warning("metrics: queue depths not read", exc_info=True)
            up.add_metric(["broker"], 0)
        else:
            up.add_metric(["broker"], 1)
            waiting = GaugeMetricFamily("streamguard_queue_messages", "Messages waiting in the "
                                        "broker's queue (not yet taken by a worker), by role and "
                                        "queue name.", labels=["role", "queue"])
            for role, name in queues.items():
                waiting.add_metric([role, name], depths.get(name, 0))
            yield waiting
        yield up
        if self.sse_connections is not None:
            streams = GaugeMetricFamily("streamguard_sse_connections",
                                        SSE_HELP + " of this API process.")
            streams.add_metric([], self.sse_connections())
            yield streams
