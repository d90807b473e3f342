"""`WriteBehindSteps`: step records leave the training thread, nothing is lost or reordered, and
a background failure (a lost lease) still stops the run at its next call to the sink.

The wrapped sink is a recorder with DbMetricSink's write methods; the database side of
`log_steps` (one transaction per batch, fenced) is covered in tests/integration/test_worker.py.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any, cast

import pytest

from streamguard.db.jobs import StaleLease
from worker.sinks import DbMetricSink
from worker.write_behind import WriteBehindSteps


class Recorder:
    """What DbMetricSink would have written, in order, with the writing thread's name."""

    job_id = "job1"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, str]] = []
        self.batches: list[list[int]] = []
        self.gate = threading.Event()  # log_steps waits for it (set: no wait)
        self.gate.set()
        self.writing = threading.Event()
        self.fail_with: BaseException | None = None

    def _add(self, kind: str, value: Any) -> None:
        self.calls.append((kind, value, threading.current_thread().name))

    def start(self, config: Mapping[str, Any]) -> None:
        self._add("start", dict(config))

    def log_steps(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.writing.set()
        assert self.gate.wait(10), "the test never opened the gate"
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append([int(r["step"]) for r in records])
        for record in records:
            self._add("step", int(record["step"]))

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._add("epoch", int(record["epoch"]))

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        self._add(kind, dict(payload))

    def finish(self, outcome: str, message: str) -> None:
        self._add("finish", outcome)


def wrap(recorder: Recorder, interval_s: float = 0.0) -> WriteBehindSteps:
    return WriteBehindSteps(cast(DbMetricSink, recorder), min_interval_s=interval_s)


def test_steps_are_written_off_the_calling_thread_and_in_order_before_the_next_record() -> None:
    rec = Recorder()
    sink = wrap(rec)
    sink.start({"epochs": 1})
    for step in (5, 10, 15):
        sink.log_step({"step": step, "epoch": 1})
    sink.log_epoch({"epoch": 1})
    sink.event("checkpoint", {"name": "last"})
    sink.log_step({"step": 20, "epoch": 2})
    sink.finish("completed", "done")
    sink.close()
    assert [(k, v) for k, v, _ in rec.calls] == [
        ("start", {"epochs": 1}), ("step", 5), ("step", 10), ("step", 15), ("epoch", 1),
        ("checkpoint", {"name": "last"}), ("step", 20), ("finish", "completed")]
    here = threading.current_thread().name
    assert {t for k, _, t in rec.calls if k == "step"} == {"steps-job1"}
    assert {t for k, _, t in rec.calls if k != "step"} == {here}


def test_log_step_returns_while_a_write_is_still_in_progress() -> None:
    rec = Recorder()
    rec.gate.clear()  # the database "hangs" inside the first write
    sink = wrap(rec)
    sink.log_step({"step": 1, "epoch": 1})
    assert rec.writing.wait(10)
    for step in (2, 3, 4):  # the training thread goes on meanwhile
        sink.log_step({"step": step, "epoch": 1})
    assert rec.batches == []
    rec.gate.set()
    sink.flush()
    # what queued up behind the slow write shares the next transaction
    assert rec.batches == [[1], [2, 3, 4]]
    sink.close()


def test_records_queued_within_the_interval_share_one_transaction() -> None:
    rec = Recorder()
    sink = wrap(rec, interval_s=3600.0)  # after the first batch, only a flush writes
    for step in range(1, 8):
        sink.log_step({"step": step, "epoch": 1})
    sink.log_epoch({"epoch": 1})  # flushes first
    assert [s for batch in rec.batches for s in batch] == list(range(1, 8))
    assert len(rec.batches) <= 2, rec.batches
    assert [k for k, _, _ in rec.calls][-1] == "epoch"
    sink.close()


@pytest.mark.parametrize("next_call", ["log_step", "log_epoch", "event", "finish", "flush"])
def test_a_stale_lease_found_in_the_background_stops_the_run_at_its_next_call(
        next_call: str) -> None:
    rec = Recorder()
    rec.fail_with = StaleLease("job job1: lease token 1 is stale")
    sink = wrap(rec)
    sink.log_step({"step": 1, "epoch": 1})
    writer = next(t for t in threading.enumerate() if t.name == "steps-job1")
    writer.join(10)  # the background write failed and its thread ended
    assert not writer.is_alive()
    with pytest.raises(StaleLease):
        call = {"log_step": lambda: sink.log_step({"step": 2, "epoch": 1}),
                "log_epoch": lambda: sink.log_epoch({"epoch": 1}),
                "event": lambda: sink.event("checkpoint", {"name": "last"}),
                "finish": lambda: sink.finish("completed", "done"),
                "flush": sink.flush}[next_call]
        call()
    with pytest.raises(StaleLease):  # and again: nothing more is written after it
        sink.log_epoch({"epoch": 1})
    assert rec.calls == []
    sink.close()  # logs, never raises: the run's own error is the one to report


def test_close_writes_what_a_failed_run_left_queued() -> None:
    rec = Recorder()
    sink = wrap(rec, interval_s=3600.0)
    sink.log_step({"step": 1, "epoch": 1})
    sink.flush()
    for step in (2, 3):  # queued behind the interval when the run raises
        sink.log_step({"step": step, "epoch": 1})
    sink.close()
    assert [v for k, v, _ in rec.calls if k == "step"] == [1, 2, 3]
    with pytest.raises(RuntimeError):
        sink.log_step({"step": 4, "epoch": 1})
