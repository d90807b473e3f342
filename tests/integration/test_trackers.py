"""Experiment trackers end to end: a job submitted through the API with `trackers`, run by the
real task body (`train_job.run`), reports to a real `mlflow server` and to TensorBoard files;
what they hold is compared with the job's metrics as stored in our database. A tracker that is
down never fails the job: it becomes one warning event, visible in GET /v1/jobs/{id}/events.

Run: .venv/bin/pytest tests/integration/test_trackers.py
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from streamguard.db import metrics as metrics_repo
from streamguard.db.models import Job
from streamguard.settings import Settings, get_settings
from streamguard.storage import store_from_uri
from streamguard.synth import synth_examples
from streamguard.trackers import MlflowSink
from tests.integration.api_fixtures import (  # noqa: F401 - fixtures
    ApiHarness,
    api_db_url,
    api_sessions,
    make_harness,
    parse_sse,
)
from tests.integration.conftest import free_port
from tests.integration.tracker_fixtures import MlflowServer, mlflow_server  # noqa: F401
from worker.tasks import train_job

pytestmark = pytest.mark.integration

# test_worker.py's recipe: a tiny model that separates the classes within its first epoch
CONFIG: dict[str, Any] = {
    "model": "tiny", "max_seq_len": 96, "tokenizer_vocab_size": 600, "batch_size": 8,
    "lr": 1e-3, "epochs": 2, "early_stopping_patience": 0}
STEP_FIELDS = ("train_loss", "lr", "grad_norm", "samples_per_s", "epoch_progress")


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: 2 OpenMP threads on 2 shared cores spin against other processes."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tracker_api(tmp_path_factory: pytest.TempPathFactory, api_db_url: str,  # noqa: F811
                api_sessions: Callable[[], Session]) -> Iterator[ApiHarness]:  # noqa: F811
    yield from make_harness(tmp_path_factory.mktemp("trackers"), api_db_url, api_sessions)


@pytest.fixture(scope="module")
def datasets(tracker_api: ApiHarness) -> dict[str, dict[str, str]]:
    """Synthetic C splits (1,200 / 100 / 100 rows) uploaded by tenant `a`."""
    refs = {}
    for i, (split, n) in enumerate({"train": 1200, "val": 100, "test": 100}.items()):
        rows = synth_examples(n, seed=i, vulnerable_fraction=0.46, id_prefix=split)
        response = tracker_api.upload(rows, name=f"{split}.jsonl")
        assert response.status_code == 201, response.text
        refs[split] = {"dataset_id": response.json()["id"]}
    return refs


@contextmanager
def worker_settings(api: ApiHarness, **env: str) -> Iterator[Settings]:
    """The environment a worker of this deployment would have (plus `env`)."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"SG_DATA_DIR": str(api.settings.data_dir),
                            "SG_DB__URL": api.settings.db.url,
                            "SG_STORAGE__URI": api.settings.storage.uri,
                            "SG_WORKER__LEASE_S": "30", "SG_WORKER__HEARTBEAT_S": "1",
                            **env}.items():
            mp.setenv(name, value)
        for name in ("SG_REDIS__URL", "SG_BROKER__URL", "SG_WORKER__WORK_DIR",
                     "SG_TRACKERS__TENSORBOARD_DIR"):
            mp.delenv(name, raising=False)
        get_settings.cache_clear()
        try:
            yield get_settings()
        finally:
            get_settings.cache_clear()


@dataclass
class Done:
    job_id: str
    tenant_id: str
    status: str | None
    settings: Settings


def submit_and_run(api: ApiHarness, datasets: dict[str, Any], config: dict[str, Any],
                   **env: str) -> Done:
    body = {"name": "tracked tiny", "datasets": datasets, "config": config}
    response = api.client.post("/v1/jobs", json=body, headers=api.auth())
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    with worker_settings(api, **env) as settings:
        status = train_job.run(job_id)
    return Done(job_id, api.tenant_ids["a"], status, settings)


def stored(api: ApiHarness, job_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The job's step and epoch records as our database holds them."""
    with api.sessions() as session:
        steps = [r.record | {"step": r.step} for r in
                 metrics_repo.list_steps(session=session, job_id=job_id, limit=10_000)]
        epochs = [r.record for r in metrics_repo.list_epochs(session=session, job_id=job_id)]
    return steps, epochs


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """What every epoch must be in the trackers as, written out independently of the sinks."""
    dist, ((tn, fp), (fn, tp)) = record["prediction_distribution"], record["confusion_matrix"]
    expected = {f"epoch/{k}": float(v) for k, v in record.items()
                if isinstance(v, int | float) and k not in ("epoch", "step")}
    expected |= {"epoch/pred_vulnerable": dist["predicted_vulnerable"],
                 "epoch/pred_safe": dist["predicted_safe"],
                 "epoch/actual_vulnerable": dist["actual_vulnerable"],
                 "epoch/actual_safe": dist["actual_safe"],
                 "epoch/pred_ratio_vulnerable":
                     dist["predicted_vulnerable"] / dist["actual_vulnerable"],
                 "epoch/confusion_tn": tn, "epoch/confusion_fp": fp,
                 "epoch/confusion_fn": fn, "epoch/confusion_tp": tp,
                 "epoch/warnings": len(record["warnings"])}
    return expected


@pytest.fixture(scope="module")
def tracked(tracker_api: ApiHarness, datasets: dict[str, Any],
            mlflow_server: MlflowServer) -> Done:  # noqa: F811
    """ONE tiny job reporting to both trackers."""
    return submit_and_run(tracker_api, datasets,
                          CONFIG | {"trackers": ["mlflow", "tensorboard"]},
                          SG_TRACKERS__MLFLOW_URI=mlflow_server.uri,
                          SG_TRACKERS__MLFLOW_EXPERIMENT="trackers-test")


def mlflow_run(server: MlflowServer, job_id: str) -> Any:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server.uri)
    experiment = client.get_experiment_by_name("trackers-test")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`streamguard.job_id` = '{job_id}'")
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


@pytest.mark.slow
def test_the_mlflow_run_holds_params_every_metric_and_the_model(
        tracker_api: ApiHarness, tracked: Done, mlflow_server: MlflowServer) -> None:  # noqa: F811
    assert tracked.status == "completed"
    client, run = mlflow_run(mlflow_server, tracked.job_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked tiny"
    assert run.data.tags["streamguard.outcome"] == "completed"
    assert run.data.tags["streamguard.tenant_id"] == tracked.tenant_id

    # params: the resolved config as stored on the job, and the numbers the run derived
    with tracker_api.sessions() as session:
        job = session.get(Job, tracked.job_id)
        assert job is not None
        config = job.spec["config"]
    params = run.data.params
    for key, value in config.items():
        assert params[key] == (value if isinstance(value, str) else json.dumps(value)), key
    steps, epochs = stored(tracker_api, tracked.job_id)
    assert params["effective.total_steps"] == str(steps[-1]["total_steps"])
    assert float(params["effective.lr"]) > 0 and "effective.warmup_steps" in params

    # every step metric at every logged step, and nothing else
    assert len(steps) > 10 and len(epochs) == 2
    for field in STEP_FIELDS:
        history = sorted((m.step, m.value) for m in client.get_metric_history(
            run.info.run_id, f"step/{field}"))
        assert [h[0] for h in history] == [s["step"] for s in steps], field
        assert [h[1] for h in history] == pytest.approx([s[field] for s in steps]), field
    # every epoch field, the prediction distribution and confusion matrix as metrics too
    for record in epochs:
        for key, value in epoch_scalars(record).items():
            history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            assert history[record["step"]] == pytest.approx(value), key
    assert sorted(m.step for m in client.get_metric_history(
        run.info.run_id, "epoch/pred_vulnerable")) == [e["step"] for e in epochs]
    test_f1 = client.get_metric_history(run.info.run_id, "test/f1")
    assert [m.value for m in test_f1] == pytest.approx([job.test_metrics["f1"]])

    # the model: exactly the files of the published best checkpoint's model directory
    with tracker_api.sessions() as session:
        best = metrics_repo.get_checkpoint(session=session, job_id=tracked.job_id, name="best")
        assert best is not None
        archive_key = best.manifest["archive_key"]
    store = store_from_uri(tracker_api.settings.storage.uri)
    with tarfile.open(fileobj=io.BytesIO(store.get_bytes(archive_key)), mode="r:gz") as tar:
        published = {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                     for m in tar.getmembers() if m.isfile()}
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/model.safetensors", "model/config.json", "model/tokenizer.json"} <= logged
    weights_in_archive = published["model/model.safetensors"]
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(run.info.run_id, "model/model.safetensors", tmp)
        assert hashlib.sha256(Path(path).read_bytes()).digest() == \
            hashlib.sha256(weights_in_archive).digest()
    assert {name for name in published if name.count("/") == 1} <= logged


@pytest.mark.slow
def test_tensorboard_event_files_hold_every_scalar(tracker_api: ApiHarness,
                                                   tracked: Done) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = tracked.settings.trackers.tensorboard_dir / tracked.tenant_id / tracked.job_id
    assert folder.is_dir(), folder
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    steps, epochs = stored(tracker_api, tracked.job_id)
    scalars = set(events.Tags()["scalars"])
    for field in STEP_FIELDS:
        points = events.Scalars(f"step/{field}")
        assert [e.step for e in points] == [s["step"] for s in steps], field
        assert [e.value for e in points] == pytest.approx([s[field] for s in steps],
                                                          rel=1e-6), field
    for record in epochs:
        for key, value in epoch_scalars(record).items():
            assert key in scalars, key
            at = {e.step: e.value for e in events.Scalars(key)}
            assert at[record["step"]] == pytest.approx(value, rel=1e-6), key
    assert "params/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow
def test_a_dead_tracker_never_fails_the_job_and_says_so_once(
        tracker_api: ApiHarness, datasets: dict[str, Any]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = submit_and_run(tracker_api, datasets, CONFIG | {"epochs": 1, "trackers": ["mlflow"]},
                          SG_TRACKERS__MLFLOW_URI=closed, SG_TRACKERS__MLFLOW_MAX_RETRIES="0")
    assert done.status not in (None, "failed")
    steps, epochs = stored(tracker_api, done.job_id)
    assert steps and [e["epoch"] for e in epochs] == [1]  # it trained through its epoch
    url = f"/v1/jobs/{done.job_id}/events"
    with tracker_api.client.stream("GET", url, params={"last_event_id": 0},
                                   headers=tracker_api.auth()) as response:
        assert response.status_code == 200
        events = parse_sse(response.read().decode())
    notices = [json.loads(e["data"]) for e in events if e["event"] == "warning"
               and json.loads(e["data"])["source"] == "tracker"]
    assert len(notices) == 1, notices
    assert notices[0]["tracker"] == "mlflow" and notices[0]["prediction_distribution"] is None
    assert notices[0]["message"].startswith("mlflow tracker failed while starting")
    assert "training goes on" in notices[0]["message"]
    assert closed.split("//")[1] not in notices[0]["message"]  # no address for the tenant
    assert json.loads(events[-1]["data"])["status"] == done.status


def test_an_unknown_tracker_is_refused_naming_the_field(tracker_api: ApiHarness,
                                                        datasets: dict[str, Any]) -> None:
    body = {"datasets": datasets, "config": CONFIG | {"trackers": ["mlflow", "wandb"]}}
    response = tracker_api.client.post("/v1/jobs", json=body, headers=tracker_api.auth())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "config.trackers"
    assert "'wandb'" in error["message"] and "accepted: mlflow, tensorboard" in error["message"]


def test_warnings_and_a_resumed_attempt_go_to_the_same_mlflow_run(
        mlflow_server: MlflowServer, tmp_path: Path) -> None:  # noqa: F811
    """No training: the sink's calls as the loop makes them, then a second attempt resuming."""
    from mlflow.tracking import MlflowClient

    key = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:32]
    failures: list[dict[str, Any]] = []

    def attempt() -> MlflowSink:
        return MlflowSink(mlflow_server.uri, experiment="trackers-resume", run_key=key,
                          run_name="resumed", on_failure=failures.append)

    first = attempt()
    first.start({"config": {"lr": 0.001, "trackers": ["mlflow"]}, "lr": 0.002,
                 "start_epoch": 0, "start_step": 0})
    first.log_step({"step": 5, "epoch": 1, "train_loss": 0.7, "lr": 0.002, "grad_norm": None})
    first.event("warning", {"epoch": 1, "step": 5, "message": "vulnerable below 30%"})
    first.finish("preempted", "preempted at optimizer step 5")
    second = attempt()
    second.start({"config": {"lr": 0.001, "trackers": ["mlflow"]}, "lr": 0.002,
                  "start_epoch": 0, "start_step": 5})
    second.log_step({"step": 10, "epoch": 1, "train_loss": 0.6, "lr": 0.001, "grad_norm": 1.5})
    second.event("rollback", {"epoch": 1, "step": 10, "to_epoch": 1, "to_step": 5,
                              "lr_factor": 0.5, "rollback": 1, "max_rollbacks": 2,
                              "reason": "no safe predictions"})
    second.finish("completed", "completed 1 epoch(s)")
    assert failures == [] and first.run_id == second.run_id

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED" and run.data.params["effective.lr"] == "0.002"
    assert [(m.step, m.value) for m in client.get_metric_history(
        run.info.run_id, "step/train_loss")] == [(5, 0.7), (10, 0.6)]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "step/grad_norm")] == \
        [10]  # an fp16 overflow's null is no point
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(client.download_artifacts(run.info.run_id, "guard/warnings.txt",
                                              tmp)).read_text()
    assert text.splitlines() == [
        "[epoch 1, step 5] WARNING vulnerable below 30%",
        "[epoch 1, step 10] ROLLBACK 1/2: no safe predictions; back to epoch 1 (step 5), "
        "LR x0.5"]
    assert run.data.tags["streamguard.last_warning"].startswith("[epoch 1, step 10] ROLLBACK")
