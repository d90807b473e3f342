"""Prometheus metrics of a training worker, served on `worker.metrics_port` (0: not served).

    SG_WORKER__METRICS_PORT=9101 celery -A worker.celery_app:app worker --pool=solo ...
    curl -s http://127.0.0.1:9101/metrics | grep ^streamguard_worker_

Nothing here touches the training loop: the task adds a `PrometheusSink` to the job's sink (a
MetricSink, like the database sink) and wraps the checkpoint store in a `TimedStore`, so every
number comes from the records the loop already reports:

- step records (every `log_every_steps` optimizer steps): optimizer steps counted, samples/s,
  the mean optimizer step time of the window (the effective batch over samples/s);
- epoch records: epochs counted, epoch time (training only, evaluation excluded);
- `warning` events by kind, `rollback` events, the run's outcome (stops by reason);
- `checkpoint` events: the seconds the store spent uploading that checkpoint (its files, its
  model archive and its pointers);
- GPU memory (allocated, reserved, peak) read from torch at scrape time, once CUDA is in use.

The metrics live in the process that trains: the solo pool (`--pool=solo`, as compose and
`streamguard up` run it) trains in the worker's main process, which serves them. A prefork pool
would train in child processes whose numbers this port cannot see, so the server refuses to
start there (with a warning): run one solo worker per GPU.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from streamguard.settings import WorkerSettings
from streamguard.storage import ArtifactStore, ObjectInfo

log = logging.getLogger("streamguard.worker")

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
EPOCH_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
                 14400.0, 43200.0, 86400.0)
UPLOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: The prefix the guard gives warnings before the model first separated the classes.
NOT_SEPARATING = "not_separating_yet"


class WorkerMetrics:
    """The worker's metric objects, in `registry` (the process's default one in the worker)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.steps = Counter("streamguard_worker_optimizer_steps", "Optimizer steps trained "
                             "by this worker (counted at each logged step).", registry=registry)
        self.epochs = Counter("streamguard_worker_epochs", "Epochs trained and evaluated by "
                              "this worker.", registry=registry)
        self.samples_per_s = Gauge("streamguard_worker_samples_per_second", "Training samples "
                                   "per second over the last logged window of steps.",
                                   registry=registry)
        self.step_time = Histogram("streamguard_worker_step_duration_seconds", "Mean time of "
                                   "one optimizer step over each logged window of steps.",
                                   buckets=STEP_BUCKETS, registry=registry)
        self.epoch_time = Histogram("streamguard_worker_epoch_duration_seconds", "Training "
                                    "time of each epoch (its evaluation excluded).",
                                    buckets=EPOCH_BUCKETS, registry=registry)
        self.warnings = Counter("streamguard_worker_guard_warnings", "Collapse-guard warnings, "
                                "by kind (collapse_risk, not_separating_yet).", ["kind"],
                                registry=registry)
        self.rollbacks = Counter("streamguard_worker_rollbacks", "Rollbacks to the best "
                                 "checkpoint after a collapse.", registry=registry)
        self.stops = Counter("streamguard_worker_stops", "Runs ended, by reason (the run's "
                             "outcome: completed, early_stopped, collapsed, not_learning, "
                             "non_finite_loss, cancelled, preempted).", ["reason"],
                             registry=registry)
        self.upload_time = Histogram("streamguard_worker_checkpoint_upload_duration_seconds",
                                     "Time the store took to upload one checkpoint (files, "
                                     "model archive, pointers).", buckets=UPLOAD_BUCKETS,
                                     registry=registry)
        registry.register(GpuMemoryCollector())


class GpuMemoryCollector:
    """torch's CUDA memory counters per device, read at scrape time; nothing before the
    process has used CUDA (and torch is never imported for a scrape)."""

    def collect(self) -> Iterator[Metric]:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return
        families = {
            "allocated": GaugeMetricFamily("streamguard_worker_gpu_memory_allocated_bytes",
                                           "GPU memory held by tensors.", labels=["device"]),
            "reserved": GaugeMetricFamily("streamguard_worker_gpu_memory_reserved_bytes",
                                          "GPU memory held by torch's caching allocator.",
                                          labels=["device"]),
            "peak": GaugeMetricFamily("streamguard_worker_gpu_memory_peak_bytes", "Most GPU "
                                      "memory held by tensors since the process started.",
                                      labels=["device"]),
        }
        for index in range(torch.cuda.device_count()):
            device = f"cuda:{index}"
            families["allocated"].add_metric([device], torch.cuda.memory_allocated(index))
            families["reserved"].add_metric([device], torch.cuda.memory_reserved(index))
            families["peak"].add_metric([device], torch.cuda.max_memory_allocated(index))
        yield from families.values()


class TimedStore:
    """An ArtifactStore that adds up the seconds its uploads take (`put_file`, `put_bytes`)
    until `take_upload_s()`; every other call goes straight through. Thread-safe."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store
        self._upload_s = 0.0
        self._lock = threading.Lock()

    def take_upload_s(self) -> float:
        """The upload seconds since the last call (and start again from 0)."""
        with self._lock:
            seconds, self._upload_s = self._upload_s, 0.0
        return seconds

    def _add(self, start: float) -> None:
        with self._lock:
            self._upload_s += time.perf_counter() - start

    def put_file(self, local_path: str | Path, key: str) -> None:
        start = time.perf_counter()
        try:
            self.store.put_file(local_path, key)
        finally:
            self._add(start)

    def put_bytes(self, data: bytes, key: str) -> None:
        start = time.perf_counter()
        try:
            self.store.put_bytes(data, key)
        finally:
            self._add(start)

    def get_file(self, key: str, local_path: str | Path) -> None:
        self.store.get_file(key, local_path)

    def get_bytes(self, key: str) -> bytes:
        return self.store.get_bytes(key)

    def exists(self, key: str) -> bool:
        return self.store.exists(key)

    def list(self, prefix: str) -> list[ObjectInfo]:
        return self.store.list(prefix)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def uri(self, key: str) -> str:
        return self.store.uri(key)


class PrometheusSink:
    """MetricSink recording one run into `metrics` (see the module docstring).

    Args:
        metrics: where to count (the worker's `WORKER_METRICS`).
        uploads: the run's checkpoint store, timed; each `checkpoint` event of a new
            checkpoint folder observes the upload seconds it added up since the last one.
    """

    def __init__(self, metrics: WorkerMetrics, uploads: TimedStore | None = None) -> None:
        self.metrics = metrics
        self.uploads = uploads
        self._effective_batch = 0
        self._last_step: int | None = None
        self._last_checkpoint: str | None = None

    def start(self, config: Mapping[str, Any]) -> None:
        self._effective_batch = int(config.get("effective_batch") or 0)
        self._last_step = int(config.get("start_step") or 0)

    def log_step(self, record: Mapping[str, Any]) -> None:
        step = int(record["step"])
        if self._last_step is not None and step > self._last_step:
            self.metrics.steps.inc(step - self._last_step)
        self._last_step = step  # a rollback goes back: count from there
        rate = record.get("samples_per_s")
        if isinstance(rate, int | float) and rate > 0:
            self.metrics.samples_per_s.set(rate)
            if self._effective_batch:
                self.metrics.step_time.observe(self._effective_batch / rate)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self.metrics.epochs.inc()
        seconds = record.get("epoch_time_s")
        if isinstance(seconds, int | float) and seconds >= 0:
            self.metrics.epoch_time.observe(seconds)

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        if kind == "warning":
            message = str(payload.get("message", ""))
            self.metrics.warnings.labels(
                NOT_SEPARATING if message.startswith(NOT_SEPARATING) else "collapse_risk").inc()
        elif kind == "rollback":
            self.metrics.rollbacks.inc()
            self._last_step = int(payload.get("to_step", 0))
        elif kind == "checkpoint" and self.uploads is not None:
            folder = str(payload.get("key_prefix"))
            if folder != self._last_checkpoint:  # `last` and `best` of one folder: once
                self._last_checkpoint = folder
                self.metrics.upload_time.observe(self.uploads.take_upload_s())

    def finish(self, outcome: str, message: str) -> None:  # noqa: ARG002 - the protocol's
        self.metrics.stops.labels(outcome).inc()


#: The worker process's metrics (the default registry, which the metrics port serves).
WORKER_METRICS = WorkerMetrics()


def serve(settings: WorkerSettings, pool: object = None) -> bool:
    """Start the metrics HTTP server on `settings.metrics_port` (a daemon thread); False when
    the port is 0 or the pool trains in child processes (prefork), whose metrics it cannot
    see."""
    if not settings.metrics_port:
        return False
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "prefork" in str(name):
        log.warning("worker metrics not served: the prefork pool trains in child processes "
                    "whose metrics port %d would not see; run the worker with --pool=solo "
                    "(one per GPU)", settings.metrics_port)
        return False
    from prometheus_client import start_http_server

    start_http_server(settings.metrics_port, addr=settings.metrics_host)
    log.info("worker metrics on http://%s:%d/metrics", settings.metrics_host,
             settings.metrics_port)
    return True
