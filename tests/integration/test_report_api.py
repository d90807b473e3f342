"""GET /v1/jobs/{id}/report.png against the API over PostgreSQL (records seeded the way a worker
writes them), and `streamguard report` against a live `streamguard up --no-demo` service.

Run: .venv/bin/pytest tests/integration/test_report_api.py
"""

from __future__ import annotations

import io
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import matplotlib.image
import pytest
from fastapi.testclient import TestClient

from api.routes.report import collect
from streamguard.db import jobs as jobs_repo
from streamguard.db import metrics as metrics_repo
from streamguard.db.models import EventKind, JobStatus
from streamguard.report import collect_remote
from tests.e2e.harness import TERMINAL, VENV_BIN, Proc, base_env, free_port
from tests.integration import api_fixtures
from tests.integration.api_fixtures import ApiHarness, epoch_record, warning_payload
from tests.integration.client_fixtures import jsonl, split_rows

pytestmark = pytest.mark.integration

# Fixtures from api_fixtures (integration/conftest.py is owned elsewhere).
api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions
api_fixture = api_fixtures.api_fixture  # the `api` fixture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def report_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/report.png"


def submit(api: ApiHarness, tenant: str = "a") -> str:
    response = api.client.post("/v1/jobs", json=api.job_body(tenant), headers=api.auth(tenant))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def seed_collapsed_run(api: ApiHarness, job_id: str) -> None:
    """Three epochs (the vulnerable class fading to zero predictions), step points with
    replayed ones, a warning event, then the job ends collapsed: as a worker leaves it."""
    with api.sessions() as session:
        token = jobs_repo.claim_job(session=session, job_id=job_id, worker_id="w1", lease_s=60)
        assert token is not None
        session.commit()
    with api.sessions() as session:
        for step in range(1, 13):
            epoch = (step - 1) // 4 + 1
            metrics_repo.upsert_step(
                session=session, job_id=job_id, token=token, step=step, epoch=epoch,
                total_steps=12, record={
                    "step": step, "epoch": epoch, "epoch_progress": ((step - 1) % 4 + 1) / 4,
                    "total_steps": 12, "train_loss": 0.7 - 0.01 * step, "lr": 1e-4,
                    "grad_norm": 1.0, "samples_per_s": 30.0, "replayed": step == 5})
        for epoch, predicted in ((1, 6), (2, 2), (3, 0)):
            dist = {"predicted_vulnerable": predicted, "predicted_safe": 10 - predicted,
                    "actual_vulnerable": 7, "actual_safe": 3}
            metrics_repo.upsert_epoch(session=session, job_id=job_id, token=token, epoch=epoch,
                                      record=epoch_record(epoch, prediction_distribution=dist,
                                                          roc_auc=None if epoch == 3 else 0.6,
                                                          is_best=epoch == 1))
        metrics_repo.add_event(session=session, job_id=job_id, kind=EventKind.WARNING,
                               payload=warning_payload(2, "vulnerable <under> 30%"))
        session.commit()
    with api.sessions() as session:
        jobs_repo.finish_job(session=session, job_id=job_id, token=token,
                             status=JobStatus.COLLAPSED,
                             message="class vulnerable received 0 predictions", best_epoch=1)
        session.commit()


def decode_png(content: bytes) -> tuple[int, ...]:
    assert content.startswith(PNG_MAGIC)
    return tuple(matplotlib.image.imread(io.BytesIO(content), format="png").shape)


def test_report_of_a_collapsed_job_is_a_png(api: ApiHarness) -> None:
    job_id = submit(api)
    seed_collapsed_run(api, job_id)
    response = api.client.get(report_url(job_id), headers=api.auth())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "private, max-age=300"  # finished: stable
    assert decode_png(response.content) == (900, 1300, 4)


def test_server_and_client_gather_the_same_records(api: ApiHarness) -> None:
    """The route's records are exactly what `collect_remote` pages out of the JSON routes."""
    job_id = submit(api)
    seed_collapsed_run(api, job_id)
    remote_client = TestClient(api.client.app, headers=api.auth())
    remote = collect_remote(remote_client, job_id)
    with api.sessions() as session:
        job = jobs_repo.get_job_or_raise(session=session, job_id=job_id,
                                         tenant_id=api.tenant_ids["a"])
        server = collect(session=session, job=job)
    assert [e["epoch"] for e in remote.epochs] == [1, 2, 3] and len(remote.steps) == 12
    assert remote.steps[4]["replayed"] is True and remote.epochs[2]["roc_auc"] is None
    # the typed warning carries its step (null: this one was stored without it) and its source
    assert remote.warnings == [{**warning_payload(2, "vulnerable <under> 30%"), "step": None,
                                "source": "guard", "tracker": None}]
    assert (server.epochs, server.steps, server.warnings) == \
        (remote.epochs, remote.steps, remote.warnings)
    ignore = {"eta_s", "heartbeat_at"}  # read at different moments
    assert {k: v for k, v in server.job.items() if k not in ignore} == \
        {k: v for k, v in remote.job.items() if k not in ignore}


def test_report_of_a_queued_job_is_not_cached(api: ApiHarness) -> None:
    job_id = submit(api)
    response = api.client.get(report_url(job_id), headers=api.auth())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["cache-control"] == "no-store"
    assert decode_png(response.content)[1] == 1300


def error_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return str(response.json()["error"]["code"])


def test_report_errors_are_json_error_responses(api: ApiHarness) -> None:
    job_id = submit(api)
    other = api.client.get(report_url(job_id), headers=api.auth("b"))
    assert other.status_code == 404 and error_code(other) == "not_found"
    unknown = api.client.get(report_url("0" * 32), headers=api.auth())
    assert unknown.status_code == 404 and error_code(unknown) == "not_found"
    anonymous = api.client.get(report_url(job_id))
    assert anonymous.status_code == 401 and error_code(anonymous) == "unauthorized"
    assert anonymous.headers["www-authenticate"].lower().startswith("bearer")
    malformed = api.client.get(report_url("not-an-id"), headers=api.auth())
    assert malformed.status_code == 422 and error_code(malformed) == "validation_error"


def test_openapi_declares_png_and_the_error_shape(api: ApiHarness) -> None:
    operation = api.client.get("/openapi.json").json()["paths"][
        "/v1/jobs/{job_id}/report.png"]["get"]
    assert operation["operationId"] == "getJobReport"
    assert set(operation["responses"]["200"]["content"]) == {"image/png"}
    for status in ("401", "404", "422", "429", "500"):
        content = operation["responses"][status]["content"]
        assert content["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")


# --- `streamguard report` against a live service ---------------------------------------------

KEY_LINE = re.compile(r"API key for tenant 'dev': (\S+)")
EPOCHS = 2


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Proc]]:
    """`streamguard up --no-demo`: uvicorn + one Celery worker on SQLite; (url, key, proc)."""
    tmp = tmp_path_factory.mktemp("report_live")
    port = free_port()
    up = Proc("streamguard-up", [str(VENV_BIN / "streamguard"), "up", "--no-demo",
                                 "--port", str(port), "--data-dir", str(tmp / "sg")],
              base_env(), tmp / "up.log", capture_stdout=True)
    try:
        match = KEY_LINE.search(up.wait_for_output(lambda t: KEY_LINE.search(t) is not None,
                                                   120))
        assert match is not None
        yield f"http://127.0.0.1:{port}", match.group(1), up
    finally:
        up.stop()


def finished_tiny_job(client: httpx.Client, up: Proc) -> dict[str, Any]:
    """Upload two generated splits, train the tiny model (the settings of
    test_generated_client.py, known to complete), wait for the end."""
    ids = {}
    for split, rows in (("train", 1600), ("val", 200)):
        response = client.post("/v1/datasets", files={"file": (
            f"{split}.jsonl", jsonl(split_rows(split, rows)), "application/x-ndjson")})
        assert response.status_code == 201, response.text
        ids[split] = response.json()["id"]
    response = client.post("/v1/jobs", json={
        "name": "report <tiny>",
        "datasets": {split: {"dataset_id": i} for split, i in ids.items()},
        "config": {"model": "tiny", "max_seq_len": 64, "tokenizer_vocab_size": 1000,
                   "epochs": EPOCHS, "batch_size": 16, "lr": 1e-3,
                   "early_stopping_patience": 0}})
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    deadline = time.monotonic() + 150
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return dict(job)
        up.check_alive()
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(1.0)


def cli(*argv: str, key: str, url: str) -> subprocess.CompletedProcess[str]:
    env = base_env() | {"STREAMGUARD_URL": url, "STREAMGUARD_API_KEY": key}
    return subprocess.run([str(VENV_BIN / "streamguard"), "report", *argv], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.timeout(300)
def test_cli_report_of_a_live_job(live: tuple[str, str, Proc], tmp_path: Path) -> None:
    url, key, up = live
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=60) as client:
        job = finished_tiny_job(client, up)
    # Seeded data and training: the tiny model predicts both classes in both epochs.
    assert job["status"] == "completed", job

    png, page = tmp_path / "job.png", tmp_path / "job.html"
    for out in (png, page):
        result = cli(job["id"], "--out", str(out), key=key, url=url)
        assert result.returncode == 0, result.stderr
        assert f"wrote {out} (completed, {EPOCHS} epoch(s)" in result.stderr
    assert decode_png(png.read_bytes()) == (900, 1300, 4)
    html = page.read_text()
    assert "report &lt;tiny&gt;" in html and "report <tiny>" not in html
    assert 'src="data:image/png;base64,' in html

    wrong = cli(job["id"], "--out", str(tmp_path / "job.pdf"), key=key, url=url)
    assert wrong.returncode != 0 and "accepted extensions: .png, .html" in wrong.stderr
    missing = cli("0" * 32, "--out", str(tmp_path / "none.png"), key=key, url=url)
    assert missing.returncode != 0 and "HTTP 404" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr + wrong.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.html", "job.png"]
