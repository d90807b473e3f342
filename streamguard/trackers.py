"""Experiment trackers as metric sinks: MLflow and TensorBoard, each through its own client.

A job names them in `config.trackers`; where they are is deployment config
(`Settings.trackers`). Both the worker and `streamguard train` build them with `build_trackers`
and put them beside their own sinks in a `FanOutSink`, so the loop still sees one sink.

What each receives (`docs/trackers.md`):

- params: every TrainConfig field, and the numbers the run derived (`effective.lr` after LR
  scaling, `effective.warmup_steps`, ...);
- metrics, x = the optimizer step: every numeric field of a step record as `step/<field>`, of
  an epoch record as `epoch/<field>`, with the prediction distribution as
  `epoch/pred_vulnerable`, `epoch/pred_safe`, `epoch/actual_*`, `epoch/pred_ratio_*` (the
  guard's measure) and the confusion matrix as `epoch/confusion_tn|fp|fn|tp`; mid-epoch
  evaluations as `eval/<field>`, the test split as `test/<field>`;
- guard warnings and rollbacks as text, the outcome as tags/text, and (MLflow) the exported
  model directory as artifacts under `model/`.

A tracker never fails a run. `TrackerSink` catches the first failure of its tracker, turns
itself off for the rest of the run and reports it once through `on_failure` (the worker records
a `warning` event with `source: tracker`; the CLI adds it to result.json's warnings). The
message names the tracker, what it was doing and the exception's type; the details (a server's
address among them) go to the log only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamguard.settings import TrackerSettings

log = logging.getLogger("streamguard.trackers")

#: Receives a `warning` event payload when a tracker fails (once per tracker and run).
OnFailure = Callable[[dict[str, Any]], None]

#: Keys of a record that are its position, not a metric.
POSITION_KEYS = frozenset({"epoch", "step", "total_steps", "replayed"})
#: Banner keys that change from one attempt to the next: tags, never params (params are
#: immutable in MLflow, and a resumed attempt logs to the same run).
ATTEMPT_KEYS = frozenset({"start_epoch", "start_batch", "start_step", "rollbacks",
                          "rollback_lr_factor", "device", "data_preparation", "config"})
#: MLflow run statuses of StreamGuard outcomes; `preempted` leaves the run RUNNING (the next
#: attempt continues it).
MLFLOW_STATUS = {"completed": "FINISHED", "early_stopped": "FINISHED", "cancelled": "KILLED",
                 "collapsed": "FAILED", "not_learning": "FAILED", "non_finite_loss": "FAILED"}
TAG_MAX = 5000  # MLflow keeps tag values up to 8,000 characters; messages are cut shorter


def metric_values(record: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """The numeric fields of a step, epoch, evaluation or test record as `prefix<field>`.

    None and non-finite values are left out, booleans become 0/1, a list of warnings its
    count; the prediction distribution becomes `pred_*`/`actual_*` counts and `pred_ratio_*`
    (predicted / actual, what the collapse guard compares with its ratios), the confusion matrix
    `confusion_tn|fp|fn|tp`; other nested objects are flattened with `/`.
    """
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in POSITION_KEYS:
            continue
        if key == "prediction_distribution" and isinstance(value, Mapping):
            for label in ("vulnerable", "safe"):
                predicted, actual = value.get(f"predicted_{label}"), value.get(f"actual_{label}")
                if isinstance(predicted, int | float):
                    out[f"{prefix}pred_{label}"] = float(predicted)
                if isinstance(actual, int | float):
                    out[f"{prefix}actual_{label}"] = float(actual)
                    if actual and isinstance(predicted, int | float):
                        out[f"{prefix}pred_ratio_{label}"] = predicted / actual
        elif key == "confusion_matrix" and isinstance(value, list) and len(value) == 2:
            (tn, fp), (fn, tp) = value  # confusion[actual][predicted]
            out.update({f"{prefix}confusion_tn": float(tn), f"{prefix}confusion_fp": float(fp),
                        f"{prefix}confusion_fn": float(fn), f"{prefix}confusion_tp": float(tp)})
        elif key == "warnings" and isinstance(value, list):
            out[f"{prefix}warnings"] = float(len(value))
        elif isinstance(value, Mapping):
            out.update(metric_values(value, f"{prefix}{key}/"))
        elif isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
        elif isinstance(value, int | float) and math.isfinite(value):
            out[f"{prefix}{key}"] = float(value)
    return out


def run_params(banner: Mapping[str, Any]) -> dict[str, str]:
    """The run's parameters: every TrainConfig field under its own name, and the numbers the
    run derived from them as `effective.<name>` (LR after scaling, warmup steps, ...)."""
    params = {k: _text(v) for k, v in (banner.get("config") or {}).items()}
    params.update({f"effective.{k}": _text(v) for k, v in banner.items()
                   if k not in ATTEMPT_KEYS and k not in ("model",)})
    return params


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def warning_line(kind: str, payload: Mapping[str, Any]) -> str:
    """One line of the guard's text log for a `warning` or `rollback` event."""
    where = f"epoch {payload.get('epoch')}, step {payload.get('step')}"
    if kind == "rollback":
        return (f"[{where}] ROLLBACK {payload.get('rollback')}/{payload.get('max_rollbacks')}: "
                f"{payload.get('reason')}; back to epoch {payload.get('to_epoch')} (step "
                f"{payload.get('to_step')}), LR x{payload.get('lr_factor')}")
    return f"[{where}] WARNING {payload.get('message')}"


class TrackerSink:
    """A MetricSink around one tracker that never raises: the first failure turns it off.

    Subclasses implement `_start`, `_log_step`, `_log_epoch`, `_event`, `_finish` and `_close`
    with their tracker's own client; this class keeps the run's position (for the warning) and
    the failure handling.
    """

    name = "tracker"

    def __init__(self, on_failure: OnFailure | None = None) -> None:
        self.on_failure = on_failure
        self.failed: str | None = None  # the failure's message once the tracker is off
        self.finished = False
        self.epoch, self.step = 1, 0  # where the run is, for the failure's warning

    # --- the MetricSink protocol -------------------------------------------------------------

    def start(self, config: Mapping[str, Any]) -> None:
        self.epoch = int(config.get("start_epoch") or 0) + 1
        self.step = int(config.get("start_step") or 0)
        self._guarded("starting", self._start, config)

    def log_step(self, record: Mapping[str, Any]) -> None:
        self._move(record)
        self._guarded("logging step metrics", self._log_step, record)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self._move(record)
        self._guarded("logging epoch metrics", self._log_epoch, record)

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        if kind in ("warning", "rollback", "evaluation", "test"):
            self._guarded(f"logging a {kind} event", self._event, kind, payload)

    def finish(self, outcome: str, message: str) -> None:
        self.finished = True
        self._guarded("finishing the run", self._finish, outcome, message)
        self._quietly(self._close)

    def close(self) -> None:
        """After a run that raised (no `finish`): end the tracker's run as failed, if it can."""
        if not self.finished:
            self.finished = True
            if self.failed is None:  # logged only: the run's own error is what matters now
                self._quietly(self._abort)
        self._quietly(self._close)

    # --- what a tracker implements -----------------------------------------------------------

    def _start(self, config: Mapping[str, Any]) -> None: ...

    def _log_step(self, record: Mapping[str, Any]) -> None: ...

    def _log_epoch(self, record: Mapping[str, Any]) -> None: ...

    def _event(self, kind: str, payload: Mapping[str, Any]) -> None: ...

    def _finish(self, outcome: str, message: str) -> None: ...

    def _abort(self) -> None: ...

    def _close(self) -> None: ...

    # --- failure handling ----------------------------------------------------------------------

    def _move(self, record: Mapping[str, Any]) -> None:
        self.epoch = int(record.get("epoch") or self.epoch)
        self.step = int(record.get("step") or self.step)

    def _guarded(self, doing: str, fn: Callable[..., None], *args: Any) -> None:
        if self.failed is not None:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker must never fail the run
            self.failed = self._failure_message(doing, exc)
            log.warning("%s: %s", self.failed, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            self._quietly(self._close)
            if self.on_failure is not None:  # outside the try: the job's own sink may raise
                self.on_failure({"epoch": self.epoch, "step": self.step,
                                 "message": self.failed, "source": "tracker",
                                 "tracker": self.name})

    def _failure_message(self, doing: str, exc: Exception) -> str:
        """What the job's warning says: no exception text (it may name hosts or paths)."""
        missing = "; its client is not installed here: pip install 'streamguard[trackers]'" \
            if isinstance(exc, ImportError) else ""
        return (f"{self.name} tracker failed while {doing} ({type(exc).__name__}{missing}); "
                f"nothing more goes to {self.name} in this run, training goes on")

    def _quietly(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - closing a broken tracker: log and go on
            log.debug("%s tracker: closing failed: %r", self.name, exc)


# --- MLflow --------------------------------------------------------------------------------------


@contextmanager
def mlflow_environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """MLflow reads its HTTP timeout, retries and credentials from the environment only (its
    client has no argument for them): set them around each call, then restore what was there,
    so nothing leaks to other code or to the next job of this process."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is not None:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class MlflowSink(TrackerSink):
    """Logs to an MLflow tracking server through `MlflowClient` with an explicit tracking URI
    (never mlflow's global "active run" state: one worker process runs many jobs).

    One MLflow run per StreamGuard run, found again by its `streamguard.run_key` tag when an
    attempt resumes (a preempted or recovered job continues its run; params are logged once).
    """

    name = "mlflow"

    def __init__(self, uri: str, *, experiment: str, run_key: str, run_name: str,
                 model_dir: Path | None = None, tags: Mapping[str, str] | None = None,
                 username: str | None = None, password: str | None = None,
                 token: str | None = None, timeout_s: int = 5, max_retries: int = 1,
                 artifact_timeout_s: int = 300, on_failure: OnFailure | None = None) -> None:
        super().__init__(on_failure)
        self.uri, self.experiment, self.run_key, self.run_name = uri, experiment, run_key, \
            run_name
        self.model_dir, self.tags = model_dir, dict(tags or {})
        self.credentials = {"MLFLOW_TRACKING_USERNAME": username,
                            "MLFLOW_TRACKING_PASSWORD": password,
                            "MLFLOW_TRACKING_TOKEN": token}
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.artifact_timeout_s = artifact_timeout_s
        self.client: Any = None
        self.run_id: str | None = None
        self.lines: list[str] = []  # the guard's warnings and rollbacks so far

    def _env(self, timeout_s: int | None = None) -> Any:
        return mlflow_environment({
            **self.credentials,
            "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s or self.timeout_s),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.max_retries)})

    def _start(self, config: Mapping[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        with self._env():
            self.client = MlflowClient(tracking_uri=self.uri)
            experiment_id = self._experiment_id()
            tags = {**self.tags, "streamguard.run_key": self.run_key,
                    "streamguard.device": str(config.get("device", ""))}
            resumed = self._find_run(experiment_id) if config.get("start_step") else None
            if resumed is not None:
                self.run_id = resumed
                self.client.update_run(resumed, status="RUNNING")
                self.lines = self._stored_lines()
                for key, value in tags.items():
                    self.client.set_tag(resumed, key, value)
                return
            run = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags)
            self.run_id = run.info.run_id
            self._log(params=run_params(config))

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(self.experiment))
        except Exception:  # another worker created it a moment ago
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def _find_run(self, experiment_id: str) -> str | None:
        runs = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`streamguard.run_key` = '{self.run_key}'",
            max_results=1, order_by=["attributes.start_time DESC"])
        return str(runs[0].info.run_id) if runs else None

    def _stored_lines(self) -> list[str]:
        """The warnings text an earlier attempt of this run uploaded (appended to, not lost)."""
        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(self.run_id, "guard/warnings.txt", tmp)
            except Exception:  # noqa: BLE001 - none yet
                return []
            return Path(path).read_text(encoding="utf-8").splitlines()

    def _log(self, *, metrics: Mapping[str, float] | None = None, step: int = 0,
             params: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        metric_rows = [Metric(k, v, now, step) for k, v in (metrics or {}).items()]
        param_rows = [Param(k, v) for k, v in (params or {}).items()]
        with self._env():
            # MLflow takes at most 1,000 metrics and 100 params per batch
            for i in range(0, max(len(metric_rows), len(param_rows), 1), 100):
                self.client.log_batch(self.run_id, metrics=metric_rows[i:i + 100],
                                      params=param_rows[i:i + 100])

    def _log_step(self, record: Mapping[str, Any]) -> None:
        self._log(metrics=metric_values(record, "step/"), step=int(record["step"]))

    def _log_epoch(self, record: Mapping[str, Any]) -> None:
        self._log(metrics=metric_values(record, "epoch/"), step=int(record["step"]))

    def _event(self, kind: str, payload: Mapping[str, Any]) -> None:
        if kind in ("evaluation", "test"):
            self._log(metrics=metric_values(payload, "eval/" if kind == "evaluation"
                                            else "test/"), step=self.step)
            return
        self.lines.append(warning_line(kind, payload))
        with self._env():
            self.client.log_text(self.run_id, "\n".join(self.lines) + "\n",
                                 "guard/warnings.txt")
            self.client.set_tag(self.run_id, "streamguard.last_warning",
                                self.lines[-1][:TAG_MAX])

    def _finish(self, outcome: str, message: str) -> None:
        with self._env():
            self.client.set_tag(self.run_id, "streamguard.outcome", outcome)
            self.client.set_tag(self.run_id, "streamguard.message", message[:TAG_MAX])
        if outcome == "preempted":
            return  # the next attempt continues this run, and logs the model
        if self.model_dir is not None and self.model_dir.is_dir():
            # the exported model (safetensors, config, tokenizer, card, threshold): large, so
            # it gets its own, longer timeout
            with self._env(self.artifact_timeout_s):
                self.client.log_artifacts(self.run_id, str(self.model_dir), "model")
        with self._env():
            self.client.set_terminated(self.run_id, MLFLOW_STATUS.get(outcome, "FAILED"))

    def _abort(self) -> None:
        if self.run_id is not None:
            with self._env():
                self.client.set_terminated(self.run_id, "FAILED")


# --- TensorBoard ---------------------------------------------------------------------------------


class TensorBoardSink(TrackerSink):
    """Writes TensorBoard event files (`torch.utils.tensorboard.SummaryWriter`) to `log_dir`:
    scalars under the same names as MLflow's metrics, the params, warnings and outcome as text.
    A resumed attempt adds event files to the same folder."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, *, on_failure: OnFailure | None = None) -> None:
        super().__init__(on_failure)
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def _start(self, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=30)
        if not config.get("start_step"):
            table = "\n".join(f"| {k} | `{v}` |" for k, v in sorted(run_params(config).items()))
            self.writer.add_text("params", "| param | value |\n|---|---|\n" + table, 0)

    def _scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def _log_step(self, record: Mapping[str, Any]) -> None:
        self._scalars(metric_values(record, "step/"), int(record["step"]))

    def _log_epoch(self, record: Mapping[str, Any]) -> None:
        self._scalars(metric_values(record, "epoch/"), int(record["step"]))
        self.writer.flush()  # an epoch is worth seeing at once

    def _event(self, kind: str, payload: Mapping[str, Any]) -> None:
        if kind in ("evaluation", "test"):
            self._scalars(metric_values(payload, "eval/" if kind == "evaluation" else "test/"),
                          self.step)
        else:
            self.writer.add_text(f"guard/{kind}s", warning_line(kind, payload), self.step)

    def _finish(self, outcome: str, message: str) -> None:
        self.writer.add_text("outcome", f"**{outcome}**: {message}", self.step)
        self.writer.flush()

    def _abort(self) -> None:
        if self.writer is not None:
            self.writer.add_text("outcome", "the run ended with an error", self.step)

    def _close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# --- building them -------------------------------------------------------------------------------


class _Unconfigured(TrackerSink):
    """A tracker the job names but the deployment has not set up: reports that at start."""

    def __init__(self, name: str, setting: str, on_failure: OnFailure | None) -> None:
        super().__init__(on_failure)
        self.name, self.setting = name, setting

    def _start(self, config: Mapping[str, Any]) -> None:  # noqa: ARG002 - fails at once
        raise LookupError(f"{self.setting} is not set")

    def _failure_message(self, doing: str, exc: Exception) -> str:  # noqa: ARG002
        return (f"{self.name} tracker is not configured on this deployment ({self.setting} is "
                f"not set); nothing goes to {self.name} in this run, training goes on")


def build_trackers(names: Sequence[str], settings: TrackerSettings, *, run_key: str,
                   run_name: str, tensorboard_dir: Path, model_dir: Path | None,
                   tags: Mapping[str, str] | None = None,
                   on_failure: OnFailure | None = None) -> list[TrackerSink]:
    """The sinks of the trackers a config names (`TrainConfig.trackers`), in that order.

    `run_key` identifies the StreamGuard run across attempts (the job id; a hash of the CLI's
    output folder), `tensorboard_dir` is this run's own folder, `model_dir` the folder the run
    exports its model to (logged to MLflow at the end when it exists).
    """
    sinks: list[TrackerSink] = []
    for name in names:
        if name == "tensorboard":
            sinks.append(TensorBoardSink(tensorboard_dir, on_failure=on_failure))
        elif name == "mlflow" and not settings.mlflow_uri:
            sinks.append(_Unconfigured("mlflow", "SG_TRACKERS__MLFLOW_URI", on_failure))
        elif name == "mlflow":
            assert settings.mlflow_uri is not None
            sinks.append(MlflowSink(
                settings.mlflow_uri, experiment=settings.mlflow_experiment, run_key=run_key,
                run_name=run_name, model_dir=model_dir, tags=tags,
                username=settings.mlflow_username,
                password=_secret(settings.mlflow_password), token=_secret(settings.mlflow_token),
                timeout_s=settings.mlflow_timeout_s, max_retries=settings.mlflow_max_retries,
                artifact_timeout_s=settings.mlflow_artifact_timeout_s, on_failure=on_failure))
        else:
            raise ValueError(f"unknown tracker {name!r}")  # TrainConfig refuses it earlier
    return sinks


def _secret(value: Any) -> str | None:
    return None if value is None else str(value.get_secret_value())
