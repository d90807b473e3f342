"""Where a run reports: a tiny MetricSink protocol, a null object, a list (tests) and a fan-out.

The loop sees exactly one sink. The worker plugs in database and Redis sinks (write to the
database first, then publish, so a late subscriber can backfill from the database).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MetricSink(Protocol):
    """Receives a run's configuration, one record per epoch, events, and the outcome."""

    def start(self, config: Mapping[str, Any]) -> None:
        """Called once before the first step with the run's config and derived numbers."""

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        """One epoch's metrics (JSON-native values), keyed as in metrics.jsonl."""

    def log_step(self, record: Mapping[str, Any]) -> None:
        """Every few optimizer steps: `step`, `epoch`, `train_loss`, `lr`, `grad_norm`, ..."""

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        """A `warning`, `checkpoint` or `test` event with a JSON-native payload."""

    def finish(self, outcome: str, message: str) -> None:
        """Called once with the run's outcome (a StopReason value) and why."""


class NullSink:
    """Discards everything: the default."""

    def start(self, config: Mapping[str, Any]) -> None:
        pass

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        pass

    def log_step(self, record: Mapping[str, Any]) -> None:
        pass

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        pass

    def finish(self, outcome: str, message: str) -> None:
        pass


class ListSink:
    """Keeps everything in lists, for tests and for the CLI's result file."""

    def __init__(self) -> None:
        self.config: dict[str, Any] | None = None
        self.epochs: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.outcome: tuple[str, str] | None = None

    def start(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self.epochs.append(dict(record))

    def log_step(self, record: Mapping[str, Any]) -> None:
        self.steps.append(dict(record))

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        self.events.append((kind, dict(payload)))

    def finish(self, outcome: str, message: str) -> None:
        self.outcome = (outcome, message)


class FanOutSink:
    """Forwards every call to each sink in order (e.g. database first, then pub/sub)."""

    def __init__(self, sinks: Sequence[MetricSink]) -> None:
        self.sinks = list(sinks)

    def start(self, config: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.start(config)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log_epoch(record)

    def log_step(self, record: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.log_step(record)

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        for sink in self.sinks:
            sink.event(kind, payload)

    def finish(self, outcome: str, message: str) -> None:
        for sink in self.sinks:
            sink.finish(outcome, message)

    def close(self) -> None:
        """Close the sinks that can be closed, the last first (a tracker may still report a
        failure through the job's own sink, which comes before it)."""
        for sink in reversed(self.sinks):
            close = getattr(sink, "close", None)
            if callable(close):
                close()


def _keep_lines(path: Path, key: str, upto: int) -> None:
    """Rewrite a JSONL file keeping rows whose `key` is at most `upto` (none when 0)."""
    kept = []
    if path.exists() and upto:
        kept = [line for line in path.read_text().splitlines()
                if line and json.loads(line)[key] <= upto]
    path.write_text("".join(line + "\n" for line in kept))


class JsonlSink:
    """Appends one JSON line per epoch to a file (the CLI's `metrics.jsonl`), and one per
    step record to `steps_path` (default: `steps.jsonl` beside it).

    On a resumed run, rows after the resume point are dropped first, so the files always hold
    exactly one row per epoch and per logged step.
    """

    def __init__(self, path: str | Path, steps_path: str | Path | None = None) -> None:
        self.path = Path(path)
        self.steps_path = Path(steps_path) if steps_path else self.path.with_name("steps.jsonl")

    def start(self, config: Mapping[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _keep_lines(self.path, "epoch", int(config.get("start_epoch", 0)))
        _keep_lines(self.steps_path, "step", int(config.get("start_step", 0)))

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")

    def log_step(self, record: Mapping[str, Any]) -> None:
        with self.steps_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(record), sort_keys=True) + "\n")

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        pass

    def finish(self, outcome: str, message: str) -> None:
        pass
