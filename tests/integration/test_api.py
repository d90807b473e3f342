"""The HTTP API against real PostgreSQL, a local store and a moto S3 server.

Run: .venv/bin/pytest -m integration tests/integration/test_api.py
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from streamguard.db import jobs as jobs_repo
from streamguard.db import metrics as metrics_repo
from streamguard.db.models import EventKind, Job, JobEvent, JobStatus
from streamguard.storage import store_from_uri
from tests.integration import api_fixtures
from tests.integration.api_fixtures import (
    ApiHarness,
    epoch_record,
    good_rows,
    make_archive,
    parse_sse,
    warning_payload,
)

# Fixtures from api_fixtures (integration/conftest.py is owned elsewhere).
api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions
api_fixture = api_fixtures.api_fixture  # the `api` fixture
s3_api_fixture = api_fixtures.s3_api_fixture  # the `s3_api` fixture
redis_api_fixture = api_fixtures.redis_api_fixture  # the `redis_api` fixture

pytestmark = pytest.mark.integration


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "field", "details", "request_id"}, body
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return dict(body["error"])


def job_count(api: ApiHarness, tenant: str = "a") -> int:
    return len(api.client.get("/v1/jobs?limit=200", headers=api.auth(tenant)).json()["items"])


def submit(api: ApiHarness, body: dict[str, Any], tenant: str = "a",
           key: str | None = None) -> httpx.Response:
    headers = api.auth(tenant) | ({"Idempotency-Key": key} if key else {})
    return api.client.post("/v1/jobs", json=body, headers=headers)


def run_job(api: ApiHarness, job_id: str) -> int:
    """Claim the job like a worker; returns the fencing token."""
    with api.sessions() as session:
        token = jobs_repo.claim_job(session=session, job_id=job_id, worker_id="w1", lease_s=60)
        session.commit()
    assert token is not None
    return token


def finish(api: ApiHarness, job_id: str, token: int, status: JobStatus, message: str) -> None:
    with api.sessions() as session:
        jobs_repo.finish_job(session=session, job_id=job_id, token=token, status=status,
                             message=message)
        session.commit()


# --- auth and health -------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sg_not-a-real-key"},
                                     {"Authorization": "Basic dXNlcjpwdw=="}])
def test_missing_or_bad_key_is_401_with_www_authenticate(api: ApiHarness,
                                                         headers: dict[str, str]) -> None:
    for method, url in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/datasets/x")]:
        response = api.client.request(method, url, headers=headers, json={})
        assert response.status_code == 401, (url, response.text)
        assert response.headers["www-authenticate"] == "Bearer"
        assert error_of(response)["code"] == "unauthorized"


def test_health_and_readiness(api: ApiHarness) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"database", "broker", "store"}


def test_readiness_names_the_failed_part(api: ApiHarness) -> None:
    folder = api.settings.broker_dir / "queue"
    folder.rmdir()
    response = api.client.get("/readyz")
    assert response.status_code == 503
    error = error_of(response)
    assert "broker" in error["message"]
    checks = {d["field"]: d["message"] for d in error["details"]}
    assert checks["broker"].startswith("failed") and checks["database"].startswith("ok")


# --- datasets --------------------------------------------------------------------------------

def test_upload_dataset_validates_inspects_and_stores(api: ApiHarness) -> None:
    rows = good_rows(10) + [good_rows(1)[0]]  # one duplicate function
    response = api.upload(rows, name="train.jsonl")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["name"] == "train.jsonl" and len(body["sha256"]) == 64
    assert body["stats"]["rows"] == 11 and body["stats"]["n_vulnerable"] == 5
    assert body["stats"]["duplicates"]["groups"] == 1
    store = store_from_uri(api.settings.storage.uri)
    key = f"tenants/{api.tenant_ids['a']}/datasets/{body['id']}.jsonl"
    assert store.get_bytes(key).count(b"\n") == 11
    assert api.client.get(f"/v1/datasets/{body['id']}", headers=api.auth()).json() == body
    other = api.client.get(f"/v1/datasets/{body['id']}", headers=api.auth("b"))
    assert other.status_code == 404 and error_of(other)["code"] == "not_found"
    listed = api.client.get("/v1/datasets", headers=api.auth()).json()["items"]
    assert [d["id"] for d in listed] == [body["id"]]


def test_upload_with_bad_lines_lists_line_numbers(api: ApiHarness) -> None:
    text = (json.dumps({"func": "int a;", "target": 1}) + "\n"
            + "{not json\n"
            + json.dumps({"func": "int b;", "target": 7}) + "\n"
            + json.dumps({"target": 0}) + "\n").encode()
    response = api.upload(text)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_dataset" and error["field"] == "file"
    assert [(d["field"], d["line"]) for d in error["details"]] == [("file", 2), ("file", 3),
                                                                   ("file", 4)]
    assert "target" in error["details"][1]["message"]
    assert "/tmp" not in error["message"]  # names the upload, not our temp file


def test_upload_that_is_not_jsonl_is_422(api: ApiHarness) -> None:
    response = api.upload(b"func,target\nint a;,1\n", name="data.csv")
    assert response.status_code == 422
    assert error_of(response)["details"][0]["line"] == 1
    empty = api.upload(b"")
    assert empty.status_code == 422


def test_upload_over_the_limit_is_413(api: ApiHarness) -> None:
    big = (json.dumps({"func": "x" * 1000, "target": 0}) + "\n").encode() * 3000  # ~3 MB > 2
    response = api.upload(big)
    assert response.status_code == 413  # refused from Content-Length, before the body is read
    assert error_of(response)["code"] == "payload_too_large"
    # Just over the limit (within the multipart allowance): the handler's byte count refuses it.
    line = (json.dumps({"func": "y" * 1000, "target": 1}) + "\n").encode()
    just_over = line * (2 * 1024 * 1024 // len(line) + 5)
    response = api.upload(just_over)
    assert response.status_code == 413 and error_of(response)["field"] == "file"
    assert api.client.get("/v1/datasets", headers=api.auth()).json()["items"] == []


# --- job submission ----------------------------------------------------------------------------

def test_submit_job_commits_then_enqueues_the_id_once(api: ApiHarness) -> None:
    body = api.job_body()
    response = submit(api, body)
    assert response.status_code == 201, response.text
    job = response.json()
    assert api.enqueued == [job["id"]]
    assert job["status"] == "queued" and job["config"]["lr"] == 2e-5  # defaults filled in
    assert job["progress"] == {"epoch": 0, "epochs": 2, "step": 0, "total_steps": None,
                               "percent": 0.0}
    assert [t["to_status"] for t in job["transitions"]] == ["queued"]
    with api.sessions() as session:
        row = jobs_repo.get_job(session=session, job_id=job["id"])
        assert row is not None and row.spec["datasets"] == body["datasets"] | {"test": None}


@pytest.mark.parametrize(("config", "field"), [
    ({"lr": 0}, "config.lr"),
    ({"epochs": 0}, "config.epochs"),
    ({"batch_size": -1}, "config.batch_size"),
    ({"mixed_precision": "fp8"}, "config.mixed_precision"),
    ({"warmup_ratio": 2.0}, "config.warmup_ratio"),
    ({"learning_rate": 0.1}, "config.learning_rate"),
    ({"collapse_stop_ratio": 0.5, "collapse_warn_ratio": 0.3}, "config"),
])
def test_invalid_config_names_the_field_and_stores_nothing(api: ApiHarness, config: dict[str, Any],
                                                           field: str) -> None:
    body = api.job_body()
    body["config"] |= config
    response = submit(api, body)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "validation_error" and error["field"] == field
    assert field in [p["field"] for p in error["details"]]
    assert api.enqueued == [] and job_count(api) == 0


@pytest.mark.parametrize(("ref", "field"), [
    ({"uri": "http://example.com/train.jsonl"}, "datasets.train.uri"),
    ({"uri": "file:///etc/passwd"}, "datasets.train.uri"),
    ({"path": "/data/train.jsonl"}, "datasets.train.dataset_id"),
    ({}, "datasets.train.dataset_id"),
    ("train.jsonl", "datasets.train"),
    ({"uri": "s3://bucket/tenants/x/train.jsonl"}, "datasets.train.uri"),  # local store
    ({"dataset_id": "0" * 32}, "datasets.train.dataset_id"),
])
def test_bad_dataset_reference_is_422(api: ApiHarness, ref: dict[str, Any], field: str) -> None:
    body = api.job_body()
    body["datasets"]["train"] = ref
    response = submit(api, body)
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert api.enqueued == [] and job_count(api) == 0


def test_dataset_of_another_tenant_is_refused(api: ApiHarness) -> None:
    body = api.job_body()
    body["datasets"]["val"] = {"dataset_id": api.dataset_id("b")}
    response = submit(api, body)
    assert response.status_code in (404, 422)
    assert error_of(response)["field"] == "datasets.val.dataset_id"
    assert api.enqueued == [] and job_count(api) == 0


def test_max_runtime_outside_limits_is_422(api: ApiHarness) -> None:
    for value in (10, api.settings.worker.max_job_runtime_s + 1):
        response = submit(api, api.job_body(max_runtime_s=value))
        assert response.status_code == 422
        assert error_of(response)["field"] == "max_runtime_s"
    assert api.enqueued == []


def test_idempotency_key(api: ApiHarness) -> None:
    body = api.job_body()
    first = submit(api, body, key="k-1")
    again = submit(api, body, key="k-1")
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    assert api.enqueued == [first.json()["id"]]
    other = submit(api, body | {"name": "other"}, key="k-1")
    assert other.status_code == 409
    assert error_of(other)["code"] == "idempotency_conflict"
    # keys are per tenant: tenant b may use the same key
    assert submit(api, api.job_body("b"), tenant="b", key="k-1").status_code == 201


def test_enqueue_failure_leaves_no_job_and_a_retry_submits_once(api: ApiHarness) -> None:
    """A 503 submit stores nothing; the same Idempotency-Key later creates the job once."""
    body, key = api.job_body(), {"Idempotency-Key": "retry-me"}
    api.fail_enqueue = True
    response = api.client.post("/v1/jobs", json=body, headers=api.auth() | key)
    assert response.status_code == 503
    assert error_of(response)["code"] == "queue_unavailable"
    assert api.client.get("/v1/jobs", headers=api.auth()).json()["items"] == []
    with api.sessions() as session:  # nothing orphaned: its events went with it
        assert session.scalar(sa.select(sa.func.count()).select_from(JobEvent)
                              .where(JobEvent.job_id.notin_(sa.select(Job.id)))) == 0
    api.fail_enqueue = False
    first = api.client.post("/v1/jobs", json=body, headers=api.auth() | key)
    again = api.client.post("/v1/jobs", json=body, headers=api.auth() | key)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] and api.enqueued == [first.json()["id"]]


# --- listing, reading, cancelling ----------------------------------------------------------------

def test_list_jobs_pages_with_a_cursor_and_filters_by_status(api: ApiHarness) -> None:
    body = api.job_body()
    ids = [submit(api, body | {"name": f"j{i}"}).json()["id"] for i in range(5)]
    api.client.post(f"/v1/jobs/{ids[0]}/cancel", headers=api.auth())
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = api.client.get("/v1/jobs", params=params, headers=api.auth()).json()
        assert len(page["items"]) <= 2
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    cancelled = api.client.get("/v1/jobs?status=cancelled", headers=api.auth()).json()["items"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    bad = api.client.get("/v1/jobs?status=done", headers=api.auth())
    assert bad.status_code == 422 and error_of(bad)["field"] == "status"
    assert "queued" in error_of(bad)["message"]
    bad_cursor = api.client.get("/v1/jobs?cursor=nope", headers=api.auth())
    assert bad_cursor.status_code == 422 and error_of(bad_cursor)["field"] == "cursor"
    too_many = api.client.get("/v1/jobs?limit=100000", headers=api.auth())
    assert too_many.status_code == 422 and error_of(too_many)["field"] == "limit"
    assert api.client.get("/v1/jobs", headers=api.auth("b")).json()["items"] == []


def test_cancel_queued_job_then_terminal_conflict(api: ApiHarness) -> None:
    job_id = submit(api, api.job_body()).json()["id"]
    response = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth())
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "cancelled" and job["finished_at"] is not None
    assert [(t["from_status"], t["to_status"]) for t in job["transitions"]] == [
        (None, "queued"), ("queued", "cancelled")]
    assert job["transitions"][1]["reason"] == "cancelled before start"
    again = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth())
    assert again.status_code == 409
    assert "cancelled" in error_of(again)["message"]


def test_cancel_running_job_requests_a_stop(api: ApiHarness) -> None:
    job_id = submit(api, api.job_body()).json()["id"]
    token = run_job(api, job_id)
    with api.sessions() as session:
        jobs_repo.record_progress(session=session, job_id=job_id, token=token, current_epoch=1,
                                  best_epoch=1, best_metric=0.5)
        session.commit()
    job = api.client.get(f"/v1/jobs/{job_id}", headers=api.auth()).json()
    assert job["status"] == "running" and job["progress"]["percent"] == 50.0
    assert job["eta_s"] is not None and job["best_epoch"] == 1
    response = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth())
    assert response.status_code == 200
    assert response.json()["status"] == "running" and response.json()["cancel_requested"]
    finish(api, job_id, token, JobStatus.COMPLETED, "completed 2 epochs")
    conflict = api.client.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth())
    assert conflict.status_code == 409 and "completed" in error_of(conflict)["message"]


def test_metrics_are_paged(api: ApiHarness) -> None:
    job_id = submit(api, api.job_body()).json()["id"]
    token = run_job(api, job_id)
    with api.sessions() as session:
        for epoch in (1, 2, 3):
            metrics_repo.upsert_epoch(session=session, job_id=job_id, token=token, epoch=epoch,
                                      record=epoch_record(epoch))
        session.commit()
    url = f"/v1/jobs/{job_id}/metrics"
    page = api.client.get(url, params={"limit": 2}, headers=api.auth()).json()
    assert [m["epoch"] for m in page["items"]] == [1, 2] and page["next_offset"] == 2
    assert page["items"][0]["confusion_matrix"] == {
        "true_negative": 1, "false_positive": 2, "false_negative": 3, "true_positive": 4}
    assert page["items"][0]["prediction_distribution"] == {
        "predicted_vulnerable": 6, "predicted_safe": 4, "actual_vulnerable": 7, "actual_safe": 3}
    assert page["items"][1]["f1"] == pytest.approx(0.2)
    rest = api.client.get(url, params={"offset": 2}, headers=api.auth()).json()
    assert [m["epoch"] for m in rest["items"]] == [3] and rest["next_offset"] is None


def test_steps_are_paged_by_step_and_streamed_typed(api: ApiHarness) -> None:
    from worker.sinks import DbMetricSink

    job_id = submit(api, api.job_body()).json()["id"]
    token = run_job(api, job_id)
    sink = DbMetricSink(api.sessions, job_id, token)
    for step in (5, 10, 15):
        sink.log_step({"step": step, "epoch": 1 + (step > 10), "epoch_progress": 0.5,
                       "total_steps": 20, "train_loss": 1.0 / step, "lr": 1e-4,
                       "grad_norm": None if step == 15 else 2.5, "samples_per_s": 80.0})
    url = f"/v1/jobs/{job_id}/steps"
    page = api.client.get(url, params={"limit": 2}, headers=api.auth()).json()
    assert [s["step"] for s in page["items"]] == [5, 10] and page["next_after_step"] == 10
    assert page["items"][0]["train_loss"] == pytest.approx(0.2)
    assert page["items"][0]["grad_norm"] == 2.5 and page["items"][0]["replayed"] is False
    rest = api.client.get(url, params={"after_step": 10}, headers=api.auth()).json()
    assert [(s["step"], s["epoch"], s["grad_norm"]) for s in rest["items"]] == [(15, 2, None)]
    assert rest["next_after_step"] is None
    job = api.client.get(f"/v1/jobs/{job_id}", headers=api.auth()).json()
    assert job["progress"] | {"percent": None} == {"epoch": 0, "epochs": 2, "step": 15,
                                                   "total_steps": 20, "percent": None}
    assert job["progress"]["percent"] == 75.0
    history = api.client.get(f"/v1/jobs/{job_id}/events/history", headers=api.auth()).json()
    steps = [e for e in history["items"] if e["kind"] == "step"]
    assert [e["data"]["step"] for e in steps] == [5, 10, 15]
    bad = api.client.get(url, params={"after_step": -1}, headers=api.auth())
    assert bad.status_code == 422 and error_of(bad)["field"] == "after_step"
    assert api.client.get(url, headers=api.auth("b")).status_code == 404


def test_every_job_route_hides_other_tenants_jobs(api: ApiHarness) -> None:
    job_id = submit(api, api.job_body()).json()["id"]
    for method, path in [("GET", ""), ("POST", "/cancel"), ("GET", "/metrics"),
                         ("GET", "/steps"), ("GET", "/events"), ("GET", "/checkpoints"),
                         ("GET", "/checkpoints/best/download")]:
        response = api.client.request(method, f"/v1/jobs/{job_id}{path}", headers=api.auth("b"))
        assert response.status_code == 404, (path, response.text)
        assert error_of(response)["code"] == "not_found"
    assert api.client.get(f"/v1/jobs/{job_id}", headers=api.auth()).status_code == 200


# --- SSE ---------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_sse_replays_after_last_event_id_and_ends_at_the_terminal_status(api: ApiHarness) -> None:
    job_id = submit(api, api.job_body()).json()["id"]
    token = run_job(api, job_id)
    with api.sessions() as session:
        first = metrics_repo.add_event(session=session, job_id=job_id, kind=EventKind.EPOCH,
                                       payload=epoch_record(1))
        second = metrics_repo.add_event(session=session, job_id=job_id, kind=EventKind.WARNING,
                                        payload=warning_payload(2, "vulnerable under 30%"))
        session.commit()
    finish(api, job_id, token, JobStatus.COLLAPSED, "class vulnerable got 0 predictions")
    url = f"/v1/jobs/{job_id}/events"
    with api.client.stream("GET", url, headers=api.auth() | {"Last-Event-ID": str(first.id)}
                           ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    assert [e["event"] for e in events] == ["warning", "status"]
    assert int(events[0]["id"]) == second.id
    assert json.loads(events[1]["data"])["status"] == "collapsed"
    # The whole history from the start, via the query parameter.
    with api.client.stream("GET", url, params={"last_event_id": 0}, headers=api.auth()) as r:
        kinds = [e["event"] for e in parse_sse(r.read().decode())]
    assert kinds == ["status", "status", "epoch", "warning", "status"]
    # Past the end of a finished job: nothing to replay, and the stream still ends.
    last = int(events[-1]["id"])
    with api.client.stream("GET", url, headers=api.auth() | {"Last-Event-ID": str(last)}) as r:
        assert parse_sse(r.read().decode()) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fixture", ["api", "redis_api"])
def test_sse_tails_live_events_until_the_job_finishes(fixture: str,
                                                      request: pytest.FixtureRequest) -> None:
    """Without Redis the stream polls the DB; with it, the worker's notification wakes it."""
    import threading
    import time

    import redis

    api: ApiHarness = request.getfixturevalue(fixture)
    job_id = submit(api, api.job_body()).json()["id"]
    token = run_job(api, job_id)
    publisher = redis.Redis.from_url(api_fixtures.REDIS_URL)

    def worker() -> None:  # writes like the worker: commit the row, then publish its id
        time.sleep(0.8)
        for epoch in (1, 2):
            with api.sessions() as session:
                event = metrics_repo.add_event(session=session, job_id=job_id,
                                               kind=EventKind.EPOCH,
                                               payload=epoch_record(epoch))
                session.commit()
            publisher.publish(f"job:{job_id}:events", json.dumps({"id": event.id}))
            time.sleep(0.3)
        finish(api, job_id, token, JobStatus.COMPLETED, "completed 2 epochs")
        publisher.publish(f"job:{job_id}:events", "{}")

    thread = threading.Thread(target=worker)
    started = time.monotonic()
    with api.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=api.auth()) as response:
        thread.start()
        events = parse_sse(response.read().decode())
    thread.join()
    publisher.close()
    assert [e["event"] for e in events] == ["status", "status", "epoch", "epoch", "status"]
    assert json.loads(events[-1]["data"])["status"] == "completed"
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    assert time.monotonic() - started < 10


# --- checkpoints -------------------------------------------------------------------------------

def publish_checkpoint(api: ApiHarness, job_id: str, tenant: str = "a") -> bytes:
    """Write an archive to the store and its `best` row, as the worker would."""
    token = run_job(api, job_id)
    archive = make_archive()
    prefix = f"tenants/{api.tenant_ids[tenant]}/jobs/{job_id}/checkpoints/epoch-0001"
    store = store_from_uri(api.settings.storage.uri,
                           endpoint_url=api.settings.storage.s3_endpoint_url)
    store.put_bytes(archive, f"{prefix}.model.tar.gz")
    with api.sessions() as session:
        metrics_repo.upsert_checkpoint(
            session=session, job_id=job_id, token=token, name="best", epoch=1, key_prefix=prefix,
            manifest={"name": "best", "epoch": 1, "key_prefix": prefix,
                      "archive_key": f"{prefix}.model.tar.gz", "size_bytes": len(archive),
                      "sha256": "ab" * 32, "manifest": {"format": 1, "files": []}},
            size_bytes=len(archive), metrics=epoch_record(1, f1=0.61))
        session.commit()
    return archive


def test_checkpoints_list_and_local_download(api: ApiHarness) -> None:
    job_id = submit(api, api.job_body()).json()["id"]
    archive = publish_checkpoint(api, job_id)
    listed = api.client.get(f"/v1/jobs/{job_id}/checkpoints", headers=api.auth()).json()
    assert listed["items"][0] | {"updated_at": None} == {
        "name": "best", "epoch": 1, "step": None, "size_bytes": len(archive), "sha256": "ab" * 32,
        "metrics": listed["items"][0]["metrics"], "updated_at": None}
    assert listed["items"][0]["metrics"]["f1"] == 0.61
    response = api.client.get(f"/v1/jobs/{job_id}/checkpoints/best/download",
                              headers=api.auth())
    assert response.status_code == 200 and response.content == archive
    assert response.headers["content-type"] == "application/gzip"
    assert f"{job_id}-best.tar.gz" in response.headers["content-disposition"]
    missing = api.client.get(f"/v1/jobs/{job_id}/checkpoints/last/download",
                             headers=api.auth())
    assert missing.status_code == 404 and "available: best" in error_of(missing)["message"]


def test_s3_checkpoint_download_redirects_to_a_presigned_url(s3_api: ApiHarness) -> None:
    api = s3_api
    job_id = submit(api, api.job_body()).json()["id"]
    archive = publish_checkpoint(api, job_id)
    response = api.client.get(f"/v1/jobs/{job_id}/checkpoints/best/download",
                              headers=api.auth(), follow_redirects=False)
    assert response.status_code == 307
    fetched = httpx.get(response.headers["location"])
    assert fetched.status_code == 200 and fetched.content == archive


def test_s3_dataset_uri_must_be_under_the_tenants_prefix(s3_api: ApiHarness) -> None:
    api = s3_api
    store = store_from_uri(api.settings.storage.uri,
                           endpoint_url=api.settings.storage.s3_endpoint_url)
    data = "".join(json.dumps(r) + "\n" for r in good_rows()).encode()
    mine = f"tenants/{api.tenant_ids['a']}/imports/train.jsonl"
    theirs = f"tenants/{api.tenant_ids['b']}/imports/train.jsonl"
    store.put_bytes(data, mine)
    store.put_bytes(data, theirs)
    body = api.job_body()
    body["datasets"]["train"] = {"uri": store.uri(mine)}
    ok = submit(api, body)
    assert ok.status_code == 201, ok.text
    for uri in (store.uri(theirs), store.uri(mine).replace("/sg/", "/"),
                store.uri(f"tenants/{api.tenant_ids['a']}/imports/missing.jsonl"),
                f"s3://other-bucket/sg/{mine}"):
        body["datasets"]["train"] = {"uri": uri}
        response = submit(api, body)
        assert response.status_code == 422, uri
        assert error_of(response)["field"] == "datasets.train.uri"
    assert len(api.enqueued) == 1


# --- OpenAPI -----------------------------------------------------------------------------------

def test_openapi_lists_every_route_with_response_schemas(api: ApiHarness) -> None:
    doc = api.client.get("/openapi.json").json()
    expected = {
        ("post", "/v1/datasets"), ("get", "/v1/datasets"), ("get", "/v1/datasets/{dataset_id}"),
        ("post", "/v1/jobs"), ("get", "/v1/jobs"), ("get", "/v1/jobs/{job_id}"),
        ("post", "/v1/jobs/{job_id}/cancel"), ("get", "/v1/jobs/{job_id}/metrics"),
        ("get", "/v1/jobs/{job_id}/steps"), ("get", "/v1/jobs/{job_id}/report.png"),
        ("post", "/v1/jobs/{job_id}/predict"),
        ("get", "/v1/jobs/{job_id}/events"), ("get", "/v1/jobs/{job_id}/checkpoints"),
        ("get", "/v1/jobs/{job_id}/checkpoints/{name}/download"),
        ("head", "/v1/jobs/{job_id}/checkpoints/{name}/download"),
        ("get", "/v1/jobs/{job_id}/events/history"), ("get", "/healthz"), ("get", "/readyz"),
    }
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert found == expected
    for method, path in expected:
        responses = doc["paths"][path][method]["responses"]
        ok = responses.get("200") or responses.get("201")
        assert ok and ok.get("content"), (method, path)
        for media in ok["content"].values():
            assert media.get("schema"), (method, path)
        if path.startswith("/v1"):
            assert responses["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
                "/ErrorResponse")
    assert "text/event-stream" in doc["paths"]["/v1/jobs/{job_id}/events"]["get"][
        "responses"]["200"]["content"]
    download = doc["paths"]["/v1/jobs/{job_id}/checkpoints/{name}/download"]["get"]
    assert "307" in download["responses"]
    assert {"JobRead", "JobCreate", "JobPage", "DatasetRead", "JobConfig",
            "ErrorResponse", "EpochMetricPage"} <= set(doc["components"]["schemas"])
