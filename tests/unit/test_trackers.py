"""Experiment trackers without a server: what a record becomes, the params, the failure rule
(a tracker never fails a run: its first failure turns it off and is reported once), and the
CLI's `--tracker` flags. The MLflow server tests are tests/integration/test_trackers.py."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from streamguard.cli import build_parser, config_from_args, main
from streamguard.settings import TrackerSettings
from streamguard.synth import synth_examples, write_jsonl
from streamguard.trackers import (
    MlflowSink,
    TensorBoardSink,
    TrackerSink,
    build_trackers,
    metric_values,
    run_params,
)

EPOCH = {
    "epoch": 2, "step": 40, "train_loss": 0.61, "val_loss": 0.58, "f1": 0.7, "roc_auc": None,
    "confusion_matrix": [[40, 14], [11, 35]],
    "prediction_distribution": {"predicted_vulnerable": 49, "predicted_safe": 51,
                                "actual_vulnerable": 46, "actual_safe": 54},
    "warnings": ["one", "two"], "is_best": True, "collapse_streak": 0, "replayed": True,
}


def closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # closed again: connections are refused at once


def test_an_epoch_record_becomes_metrics_with_the_prediction_distribution() -> None:
    values = metric_values(EPOCH, "epoch/")
    assert values == {
        "epoch/train_loss": 0.61, "epoch/val_loss": 0.58, "epoch/f1": 0.7,
        "epoch/confusion_tn": 40, "epoch/confusion_fp": 14, "epoch/confusion_fn": 11,
        "epoch/confusion_tp": 35, "epoch/pred_vulnerable": 49, "epoch/pred_safe": 51,
        "epoch/actual_vulnerable": 46, "epoch/actual_safe": 54,
        "epoch/pred_ratio_vulnerable": 49 / 46, "epoch/pred_ratio_safe": 51 / 54,
        "epoch/warnings": 2, "epoch/is_best": 1.0, "epoch/collapse_streak": 0}
    # nested objects (the test split's metrics at the validation threshold) are flattened
    assert metric_values({"f1": 0.5, "at_threshold": {"f1": 0.6, "threshold": None}},
                         "test/") == {"test/f1": 0.5, "test/at_threshold/f1": 0.6}
    # a class absent from the split has no ratio (no division by zero)
    empty = {"prediction_distribution": {"predicted_vulnerable": 3, "predicted_safe": 0,
                                         "actual_vulnerable": 0, "actual_safe": 3}}
    assert "x/pred_ratio_vulnerable" not in metric_values(empty, "x/")


def test_params_are_the_config_and_the_derived_numbers_not_the_attempt() -> None:
    banner = {"config": {"lr": 0.0005, "model": "tiny", "trackers": ["mlflow"]},
              "model": "tiny", "lr": 0.001, "warmup_steps": 12, "label_counts": [54, 46],
              "start_step": 300, "device": "cuda:0", "data_preparation": {"seconds": 1.0}}
    assert run_params(banner) == {
        "lr": "0.0005", "model": "tiny", "trackers": '["mlflow"]', "effective.lr": "0.001",
        "effective.warmup_steps": "12", "effective.label_counts": "[54, 46]"}


class Flaky(TrackerSink):
    """A tracker whose epoch logging fails (a stand-in for any client error)."""

    name = "flaky"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[str] = []

    def _start(self, config: Any) -> None:
        self.calls.append("start")

    def _log_step(self, record: Any) -> None:
        self.calls.append(f"step {record['step']}")

    def _log_epoch(self, record: Any) -> None:
        raise ConnectionError("tracker.internal:5000 refused")

    def _finish(self, outcome: str, message: str) -> None:
        self.calls.append("finish")


def test_the_first_failure_turns_the_tracker_off_and_is_reported_once() -> None:
    reports: list[dict[str, Any]] = []
    sink = Flaky(on_failure=reports.append)
    sink.start({"start_epoch": 0, "start_step": 0})
    sink.log_step({"step": 10, "epoch": 1})
    sink.log_epoch({"step": 20, "epoch": 1})  # fails: no exception reaches the loop
    sink.log_step({"step": 30, "epoch": 2})
    sink.log_epoch({"step": 40, "epoch": 2})
    sink.finish("completed", "done")
    assert sink.calls == ["start", "step 10"]  # nothing after the failure
    assert reports == [{"epoch": 1, "step": 20, "source": "tracker", "tracker": "flaky",
                        "message": "flaky tracker failed while logging epoch metrics "
                                   "(ConnectionError); nothing more goes to flaky in this run, "
                                   "training goes on"}]


def test_a_missing_client_library_says_what_to_install() -> None:
    class NotInstalled(TrackerSink):
        name = "mlflow"

        def _start(self, config: Any) -> None:
            raise ModuleNotFoundError("No module named 'mlflow'")

    reports: list[dict[str, Any]] = []
    NotInstalled(on_failure=reports.append).start({})
    assert [r["message"] for r in reports] == [
        "mlflow tracker failed while starting (ModuleNotFoundError; its client is not installed "
        "here: pip install 'streamguard[trackers]'); nothing more goes to mlflow in this run, "
        "training goes on"]


def test_a_dead_mlflow_server_costs_one_refused_call_and_one_report() -> None:
    reports: list[dict[str, Any]] = []
    sink = MlflowSink(closed_port_uri(), experiment="x", run_key="k", run_name="r",
                      max_retries=0, on_failure=reports.append)
    sink.start({"config": {"lr": 0.1}, "start_epoch": 0, "start_step": 0})
    sink.log_step({"step": 1, "epoch": 1, "train_loss": 0.7})
    sink.event("warning", {"epoch": 1, "step": 1, "message": "m"})
    sink.finish("completed", "done")
    sink.close()
    assert [r["message"].split(" (")[0] for r in reports] == \
        ["mlflow tracker failed while starting"]
    assert sink.run_id is None


def test_mlflow_settings_stay_out_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow reads timeouts and credentials from the environment: they are set around each of
    its calls only, and what the process had is restored."""
    import os

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    sink = MlflowSink(closed_port_uri(), experiment="x", run_key="k", run_name="r",
                      password="s3cret-for-the-test", timeout_s=3)
    seen = {}
    with sink._env():
        seen = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_TIMEOUT",
                                               "MLFLOW_TRACKING_PASSWORD")}
    assert seen == {"MLFLOW_HTTP_REQUEST_TIMEOUT": "3",
                    "MLFLOW_TRACKING_PASSWORD": "s3cret-for-the-test"}
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "120"
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ


def test_a_tensorboard_folder_that_cannot_be_made_is_one_report(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    reports: list[dict[str, Any]] = []
    sink = TensorBoardSink(blocker / "tb", on_failure=reports.append)
    sink.start({"start_epoch": 2, "start_step": 300})
    sink.log_epoch({"epoch": 3, "step": 450, "f1": 0.5})
    sink.finish("completed", "done")
    assert len(reports) == 1 and reports[0]["tracker"] == "tensorboard"
    assert (reports[0]["epoch"], reports[0]["step"]) == (3, 300)  # where the run was


def test_a_job_naming_an_unconfigured_mlflow_trains_with_a_warning(tmp_path: Path) -> None:
    reports: list[dict[str, Any]] = []
    (sink,) = build_trackers(["mlflow"], TrackerSettings(), run_key="k", run_name="r",
                             tensorboard_dir=tmp_path, model_dir=None,
                             on_failure=reports.append)
    sink.start({"start_epoch": 0, "start_step": 0})
    sink.finish("completed", "done")
    assert [r["message"] for r in reports] == [
        "mlflow tracker is not configured on this deployment (SG_TRACKERS__MLFLOW_URI is not "
        "set); nothing goes to mlflow in this run, training goes on"]


# --- the CLI ---------------------------------------------------------------------------------


def test_tracker_flag_is_repeatable_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--train", "t.jsonl", "--val", "v.jsonl", "--output-dir", "out"]
    args = build_parser().parse_args([*base, "--tracker", "mlflow", "--tracker",
                                      "tensorboard", "--tracker", "mlflow"])
    assert config_from_args(args).trackers == ["mlflow", "tensorboard"]
    assert config_from_args(build_parser().parse_args(base)).trackers == []
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([*base, "--tracker", "wandb"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--tracker" in err and "invalid choice: 'wandb'" in err
    assert "(allowed: mlflow, tensorboard)" in err and len(err.splitlines()) == 1


def test_tracker_mlflow_without_a_server_is_refused_before_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SG_TRACKERS__MLFLOW_URI", raising=False)
    from streamguard.settings import get_settings

    get_settings.cache_clear()
    for name in ("t", "v"):  # files that exist: the refusal is the tracker's, not theirs
        (tmp_path / f"{name}.jsonl").write_text('{"func": "int f(void) { return 0; }", '
                                                '"target": 0}\n')
    code = main(["train", "--train", str(tmp_path / "t.jsonl"), "--val",
                 str(tmp_path / "v.jsonl"), "--output-dir", str(tmp_path / "out"),
                 "--tracker", "mlflow"])
    assert code == 2
    assert "--tracker mlflow needs a tracking server: pass --mlflow-uri URI or set " \
           "SG_TRACKERS__MLFLOW_URI" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()
    get_settings.cache_clear()


@pytest.mark.slow
def test_streamguard_train_writes_every_scalar_to_tensorboard(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for i, (split, n) in enumerate({"train": 320, "val": 80}.items()):
        write_jsonl(synth_examples(n, seed=i, vulnerable_fraction=0.46, id_prefix=split),
                    tmp_path / f"{split}.jsonl")
    out = tmp_path / "run"
    code = main(["train", "--train", str(tmp_path / "train.jsonl"), "--val",
                 str(tmp_path / "val.jsonl"), "--output-dir", str(out), "--model", "tiny",
                 "--max-seq-len", "64", "--tokenizer-vocab-size", "600", "--batch-size", "16",
                 "--lr", "1e-3", "--epochs", "1", "--no-progress", "--no-cache",
                 "--tracker", "tensorboard"])
    assert code in (0, 9)  # completed, or not learning yet after one short epoch
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    (epoch,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    points = events.Scalars("step/train_loss")
    assert [e.step for e in points] == [s["step"] for s in steps]
    assert [e.value for e in points] == pytest.approx([s["train_loss"] for s in steps],
                                                      rel=1e-6)
    expected = metric_values(epoch, "epoch/")
    assert expected.keys() <= set(events.Tags()["scalars"])
    for key, value in expected.items():
        (point,) = events.Scalars(key)
        assert (point.step, point.value) == (epoch["step"], pytest.approx(value, rel=1e-6)), key
    assert "epoch/pred_vulnerable" in expected and "epoch/f1" in expected


def test_a_resumed_run_may_change_its_trackers_but_not_what_it_trains(tmp_path: Path) -> None:
    """The checkpoint's config must match to resume, except for where the run reports."""
    from streamguard.errors import CheckpointError
    from streamguard.spec import TrainConfig
    from streamguard.training import run

    last = tmp_path / "work" / "checkpoints" / "last"
    last.mkdir(parents=True)
    config = TrainConfig(model="tiny", trackers=["mlflow"])
    stored = TrainConfig(model="tiny", lr=0.5, trackers=["tensorboard"]).model_dump(mode="json")
    (last / "train_config.json").write_text(json.dumps(stored))
    with pytest.raises(CheckpointError) as refused:
        run(config, train_path="t.jsonl", val_path="v.jsonl", work_dir=tmp_path / "work",
            device="cpu")
    assert "fields ['lr']" in refused.value.message  # trackers are not named
