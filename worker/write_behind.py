"""Step metrics written behind the training thread, so an optimizer step never waits on the
database (issue 10: the service must add almost nothing to a run's wall time).

`WriteBehindSteps` wraps the job's `DbMetricSink`. `log_step` only hands the record to a writer
thread and returns; the writer commits what has queued up, several records in one transaction
(`DbMetricSink.log_steps`), at most one transaction every `min_interval_s`. Every other call
(`start`, `log_epoch`, `event`, `finish`) first waits until the handed-over steps are committed
(`flush`), then writes on the calling thread as before, so:

- events keep their order (a step's event id is below the next epoch's, checkpoint's, ...);
- fencing stays where it mattered: an epoch record, a checkpoint record, a rollback are still
  written, lease-checked, before the loop goes on (to publish a checkpoint, for instance); a
  `StaleLease` (or any failure) of a background step write is raised on the training thread at
  its next call to the sink, and nothing more is written after it;
- nothing is dropped: `finish` (the end of every run the loop returns from, preemption
  included) flushes, and `close()` (the task's `finally`) writes what is left when the run
  raised, logging a failure instead of masking the run's own exception.

What it costs: step events reach SSE readers up to `min_interval_s` later, in small batches.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from worker.sinks import DbMetricSink

log = logging.getLogger("streamguard.worker")

#: Shortest time between two step transactions; records queued meanwhile share the next one.
STEP_BATCH_S = 1.0


class WriteBehindSteps:
    """A MetricSink around `sink` whose step records are written by a background thread.

    Args:
        sink: the job's database sink (its `log_steps` writes a batch in one transaction).
        min_interval_s: shortest time between two step transactions.

    Raises:
        StaleLease: from any call after a background write found the lease gone (as
            DbMetricSink raises it), and whatever else a background write raised.
    """

    def __init__(self, sink: DbMetricSink, *, min_interval_s: float = STEP_BATCH_S) -> None:
        self.sink = sink
        self.min_interval_s = min_interval_s
        self._pending: list[dict[str, Any]] = []
        self._writing = False
        self._error: BaseException | None = None
        self._closed = False
        self._flush_now = False
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    # --- the MetricSink protocol ------------------------------------------------------------

    def start(self, config: Mapping[str, Any]) -> None:
        self.flush()
        self.sink.start(config)

    def log_step(self, record: Mapping[str, Any]) -> None:
        with self._cond:
            self._raise_error()
            if self._closed:
                raise RuntimeError("log_step after close()")
            self._pending.append(dict(record))
            if self._thread is None:
                # In the caller's context: its log lines name the job (streamguard.logs).
                self._thread = threading.Thread(target=contextvars.copy_context().run,
                                                args=(self._run,), daemon=True,
                                                name=f"steps-{self.sink.job_id}")
                self._thread.start()
            self._cond.notify_all()

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self.flush()
        self.sink.log_epoch(record)

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        self.flush()
        self.sink.event(kind, payload)

    def finish(self, outcome: str, message: str) -> None:
        self.flush()
        self.sink.finish(outcome, message)

    # --- flushing and shutdown --------------------------------------------------------------

    def flush(self) -> None:
        """Return once every step handed over is committed (and published); raise the
        background write's error if one failed."""
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()
            while (self._pending or self._writing) and self._error is None:
                self._cond.wait()
            self._flush_now = False
            self._raise_error()

    def close(self) -> None:
        """Write what is left (a failure is logged, not raised), then stop the thread."""
        try:
            self.flush()
        except Exception as exc:  # noqa: BLE001 - the run's own outcome or error wins
            log.warning("job %s: step metrics not written: %s: %s", self.sink.job_id,
                        type(exc).__name__, exc)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        last = float("-inf")
        while True:
            with self._cond:
                while not self._closed and not (self._pending and (
                        self._flush_now or time.monotonic() - last >= self.min_interval_s)):
                    # wake for new records, a flush, close, or when the interval is over
                    wait = None if not self._pending else \
                        max(0.0, self.min_interval_s - (time.monotonic() - last))
                    self._cond.wait(wait)
                if not self._pending:  # closed, nothing left
                    return
                batch, self._pending, self._writing = self._pending, [], True
            last = time.monotonic()
            try:
                self.sink.log_steps(batch)
            except BaseException as exc:  # noqa: BLE001 - raised on the training thread
                with self._cond:
                    self._error, self._writing = exc, False
                    self._pending.clear()
                    self._cond.notify_all()
                return
            with self._cond:
                self._writing = False
                self._cond.notify_all()
