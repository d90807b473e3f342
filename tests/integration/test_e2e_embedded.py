"""End to end in the embedded mode, with no servers: `streamguard up --no-demo` as a subprocess
(SQLite, Celery's filesystem broker, a file:// store, no Redis; it starts uvicorn and one real
Celery worker), driven over HTTP only. Same flow as the full-stack test; the download is the
archive streamed by the API (200, application/gzip) instead of an S3 redirect.

It runs with JSON logs and the worker's metrics port (`SG_LOG__FORMAT=json`,
`SG_WORKER__METRICS_PORT`, which `up` passes on to its children), and its one job is also what
the observability test checks: the worker's Prometheus counters, the API's jobs-by-status
gauge, and the job's id on the worker's log lines.

Run: .venv/bin/pytest -m integration tests/integration/test_e2e_embedded.py
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamguard.manifest import fetch_dir, read_pointer
from streamguard.storage import LocalArtifactStore
from tests.e2e.harness import (
    VENV_BIN,
    Api,
    Proc,
    base_env,
    check_completed_run,
    check_model_matches_worker,
    dump_logs,
    extract_archive,
    free_port,
    make_splits,
)

pytestmark = pytest.mark.integration

KEY_LINE = re.compile(r"API key for tenant 'dev': (\S+)")


@dataclass
class Embedded:
    api: Api
    data_dir: Path
    up: Proc
    metrics_port: int

    def dump_logs(self) -> None:
        dump_logs([self.up])
        for name in ("api", "worker"):
            log = self.data_dir / "logs" / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            print(f"\n===== {name} ({log}) =====\n" + "\n".join(text.splitlines()[-80:]))  # noqa: T201


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    tmp = tmp_path_factory.mktemp("e2e_embedded")
    data_dir, port, metrics_port = tmp / "sg", free_port(), free_port()
    env = base_env()  # the embedded defaults, no Redis; JSON logs and the worker's metrics
    env.update({"SG_LOG__FORMAT": "json", "SG_WORKER__METRICS_PORT": str(metrics_port)})
    up = Proc("streamguard-up", [str(VENV_BIN / "streamguard"), "up", "--no-demo",
                                 "--port", str(port), "--data-dir", str(data_dir)],
              env, tmp / "up.log", capture_stdout=True)
    box = Embedded(Api(f"http://127.0.0.1:{port}", "", [up]), data_dir, up, metrics_port)
    try:
        line = up.wait_for_output(lambda text: KEY_LINE.search(text) is not None, 180)
        match = KEY_LINE.search(line)
        assert match is not None
        box.api.key = match.group(1)
        yield box
    except BaseException:
        box.dump_logs()
        raise
    finally:
        up.stop()  # SIGTERM: `up` stops its API and worker; stragglers are killed by pid


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, embedded: Embedded) -> Iterator[None]:
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        embedded.dump_logs()


@dataclass
class Trained:
    job_id: str
    run: dict[str, Any]
    splits: dict[str, Path]


@pytest.fixture(scope="module")
def trained(embedded: Embedded, devign: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The module's one job, trained to completion through the embedded service."""
    api, data_dir = embedded.api, embedded.data_dir
    # really the no-server deployment: SQLite file, filesystem broker, local artifacts
    assert (data_dir / "streamguard.db").is_file()
    assert (data_dir / "broker" / "queue").is_dir()
    ready = api.get("/readyz")
    assert ready["status"] == "ready", ready

    splits = make_splits(devign, tmp_path_factory.mktemp("devign"))
    refs = api.upload_splits(splits)
    job_id = api.submit(refs)["id"]
    events = api.follow(job_id, timeout_s=240)
    return Trained(job_id, check_completed_run(api, job_id, events, epochs=2), splits)


def test_embedded_train_download_and_reload(embedded: Embedded, trained: Trained,
                                            tmp_path: Path) -> None:
    api, data_dir = embedded.api, embedded.data_dir
    job_id, run, splits = trained.job_id, trained.run, trained.splits
    best = run["best"]

    with api.client() as c:
        r = c.get(f"/v1/jobs/{job_id}/checkpoints/best/download")
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "application/gzip"
    assert f"{job_id}-best.tar.gz" in r.headers["content-disposition"]
    assert hashlib.sha256(r.content).hexdigest() == best["sha256"]
    assert len(r.content) == best["size_bytes"]

    store = LocalArtifactStore(data_dir / "artifacts")
    tenant_dirs = list((data_dir / "artifacts" / "tenants").iterdir())
    assert len(tenant_dirs) == 1, tenant_dirs  # tenant `dev` only
    prefix = f"tenants/{tenant_dirs[0].name}/jobs/{job_id}/checkpoints/"
    pointer = read_pointer(store, prefix + "best.json")
    assert pointer is not None and pointer["sha256"] == best["sha256"], pointer
    state_dir = tmp_path / "best_checkpoint"
    fetch_dir(store, pointer["key_prefix"], state_dir)  # sha256-verified

    model_dir = extract_archive(r.content, tmp_path / "download")
    best_epoch = run["job"]["best_epoch"]
    check_model_matches_worker(model_dir, state_dir, splits["val"], run["metrics"][best_epoch],
                               best_epoch)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200, response.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a log file, each one JSON (fails naming those that are not)."""
    lines, others = [], []
    for line in path.read_text(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            others.append(line)
    assert not others, f"{path.name}: {len(others)} line(s) not JSON:\n" + "\n".join(others[:20])
    return lines


def test_metrics_and_json_logs_of_the_job(embedded: Embedded, trained: Trained) -> None:
    job_id, run = trained.job_id, trained.run
    steps = run["job"]["progress"]["step"]
    epochs = len(run["metrics"])

    worker = scrape(f"http://127.0.0.1:{embedded.metrics_port}/metrics")
    assert worker[("streamguard_worker_optimizer_steps_total", ())] == steps > 0
    assert worker[("streamguard_worker_epochs_total", ())] == epochs == 2
    assert worker[("streamguard_worker_epoch_duration_seconds_count", ())] == epochs
    assert worker[("streamguard_worker_samples_per_second", ())] > 0
    assert worker[("streamguard_worker_step_duration_seconds_count", ())] >= epochs
    assert worker[("streamguard_worker_stops_total", (("reason", run["job"]["status"]),))] == 1
    assert worker[("streamguard_worker_checkpoint_upload_duration_seconds_count", ())] == epochs

    api = scrape(f"{embedded.api.base_url}/metrics")
    assert api[("streamguard_jobs", (("status", run["job"]["status"]),))] == 1
    assert api[("streamguard_jobs", (("status", "running"),))] == 0
    assert api[("streamguard_http_requests_total", (("method", "GET"),
                ("route", "/v1/jobs/{job_id}/events"), ("status", "200")))] >= 1

    logs = embedded.data_dir / "logs"
    worker_lines = json_lines(logs / "worker.log")
    json_lines(logs / "api.log")
    training = [line for line in worker_lines if line["logger"] == "streamguard.train"]
    assert training, "no training log line"
    assert {line.get("job_id") for line in training} == {job_id}
    assert any(line.get("job_id") == job_id and line["logger"] == "streamguard.worker"
               for line in worker_lines)
    assert any(line["message"].endswith(" ready.") for line in worker_lines)  # Celery's own
