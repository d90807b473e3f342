"""GET /metrics of the API (in process, over PostgreSQL) and JSON logs of a real uvicorn
process: a failing request's id is in its response header, its error body and its log line.

The worker's metrics and JSON log lines after a real job are checked in
tests/integration/test_e2e_embedded.py (one tiny job through `streamguard up`).

Run: .venv/bin/pytest -m integration tests/integration/test_observability.py
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session

from streamguard.db.jobs import create_job
from tests.e2e.harness import Proc, api_cmd, base_env, free_port, wait_ready
from tests.integration import api_fixtures
from tests.integration.api_fixtures import ApiHarness, make_harness
from tests.integration.db_fixtures import sqlite_with_key

# Fixtures from api_fixtures (integration/conftest.py is owned elsewhere).
api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions
api_fixture = api_fixtures.api_fixture  # the `api` fixture

pytestmark = pytest.mark.integration


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics (sent without an API key), keyed by name and labels."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples}


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_by_route_template_and_status(api: ApiHarness) -> None:
    job_route = {"method": "GET", "route": "/v1/jobs/{job_id}", "status": "404"}
    before = scrape(api.client)
    for _ in range(3):  # three different ids, one label set
        missing = f"{time.time_ns():032x}"[-32:]
        assert api.client.get(f"/v1/jobs/{missing}", headers=api.auth()).status_code == 404
    assert api.client.get("/no/such/route").status_code == 404
    after = scrape(api.client)

    counted = "streamguard_http_requests_total"
    assert sample(after, counted, **job_route) - sample(before, counted, **job_route) == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert sample(after, counted, **unmatched) - sample(before, counted, **unmatched) == 1
    timed = "streamguard_http_request_duration_seconds_count"
    assert sample(after, timed, **job_route) - sample(before, timed, **job_route) == 3
    assert sample(after, counted, method="GET", route="/metrics", status="200") >= 1
    routes = {dict(labels).get("route") for name, labels in after if name == counted}
    assert not any(r and "/v1/jobs/" in r and "{" not in r for r in routes), routes  # no raw ids


def test_jobs_by_status_queues_and_streams_are_read_at_scrape_time(api: ApiHarness) -> None:
    before = scrape(api.client)
    with api.sessions() as session, session.begin():
        job_id = create_job(session=session, tenant_id=api.tenant_ids["a"],
                            spec={"name": "x"}, total_epochs=1).id
    after = scrape(api.client)
    assert sample(after, "streamguard_jobs", status="queued") \
        - sample(before, "streamguard_jobs", status="queued") == 1
    assert ("streamguard_jobs", (("status", "completed"),)) in after  # every status, 0 or not
    # the filesystem broker of this app: nothing waits in either queue
    assert sample(after, "streamguard_queue_messages", role="train",
                  queue=api.settings.worker.queue) == 0
    assert sample(after, "streamguard_metrics_source_up", source="database") == 1
    assert sample(after, "streamguard_metrics_source_up", source="broker") == 1
    assert sample(after, "streamguard_sse_connections") == 0

    # an open SSE stream (the job is queued: the stream stays open) is counted while it lasts
    opened, done = threading.Event(), threading.Event()

    def follow() -> None:
        with api.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=api.auth()) as r:
            assert r.status_code == 200
            opened.set()
            for _ in r.iter_lines():
                if done.is_set():
                    break

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    assert opened.wait(30)
    deadline = time.monotonic() + 10
    while sample(scrape(api.client), "streamguard_sse_connections") != 1:
        assert time.monotonic() < deadline, "the open stream was not counted"
        time.sleep(0.1)
    done.set()
    thread.join(timeout=10)  # the next ping (api.sse_ping_s = 1) ends the read loop


def test_metrics_needs_no_key_and_stays_out_of_the_openapi_document(api: ApiHarness) -> None:
    assert api.client.get("/metrics").status_code == 200
    assert "/metrics" not in api.client.get("/openapi.json").json()["paths"]


def test_metrics_can_be_turned_off(tmp_path: Path, api_db_url: str,
                                   api_sessions: Callable[[], Session]) -> None:
    for harness in make_harness(tmp_path, api_db_url, api_sessions, metrics=False):
        response = harness.client.get("/metrics")
        assert response.status_code == 404
        assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]


# --- JSON logs of a real uvicorn process ---------------------------------------------------------

@pytest.fixture(scope="module")
def json_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Proc]]:
    """uvicorn with SG_LOG__FORMAT=json over SQLite; yields (base URL, an API key, process)."""
    tmp = tmp_path_factory.mktemp("json_api")
    db_url, key = sqlite_with_key(tmp, tenant_name="logs")
    env = base_env() | {"SG_DATA_DIR": str(tmp / "data"), "SG_DB__URL": db_url,
                        "SG_LOG__FORMAT": "json"}
    port = free_port()
    proc = Proc("api-json", api_cmd(port), env, tmp / "api.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}", [proc])
        yield f"http://127.0.0.1:{port}", key, proc
    finally:
        proc.stop()


def log_lines(proc: Proc) -> list[dict[str, Any]]:
    lines = proc.text().splitlines()
    assert lines, "the API logged nothing"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"a log line is not JSON: {line!r}")
    return parsed


def wait_for_line(proc: Proc, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [line for line in log_lines(proc) if line.get("request_id") == request_id]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no log line with request_id {request_id}:\n{proc.tail()}")


def test_a_failing_request_id_is_in_its_header_body_and_json_log_line(
        json_api: tuple[str, str, Proc]) -> None:
    base_url, key, proc = json_api
    # refused (no key; a key in the query string must not reach the log)
    r = httpx.get(f"{base_url}/v1/jobs?api_key=sg_not_for_logs", timeout=10)
    assert r.status_code == 401
    request_id = r.headers["X-Request-ID"]
    assert r.json()["error"]["request_id"] == request_id
    line = wait_for_line(proc, request_id)
    assert line["logger"] == "uvicorn.access" and line["status"] == 401
    assert line["path"] == "/v1/jobs?<redacted>"
    assert "sg_not_for_logs" not in proc.text()

    # not found, with a key: the line names the tenant too; a sane incoming id is kept
    r = httpx.get(f"{base_url}/v1/jobs/{'0' * 32}", timeout=10,
                  headers={"Authorization": f"Bearer {key}", "X-Request-ID": "trace-42"})
    assert r.status_code == 404 and r.headers["X-Request-ID"] == "trace-42"
    assert r.json()["error"]["request_id"] == "trace-42"
    line = wait_for_line(proc, "trace-42")
    assert line["status"] == 404 and line.get("tenant"), line

    for line in log_lines(proc):  # every line: JSON with the four fields
        assert {"time", "level", "logger", "message"} <= set(line), line
        assert line["time"].endswith("Z")
    assert any(line["logger"].startswith("uvicorn.error") for line in log_lines(proc))


def test_json_format_is_refused_when_misspelled(tmp_path: Path) -> None:
    """A typo in the format fails at start with the field and the accepted values."""
    env = base_env() | {"SG_DATA_DIR": str(tmp_path), "SG_LOG__FORMAT": "jsn"}
    proc = Proc("api-bad", api_cmd(free_port()), env, tmp_path / "bad.log")
    try:
        proc.proc.wait(timeout=60)
    finally:
        proc.stop()
    text = proc.log.read_text(errors="replace")
    assert proc.proc.returncode != 0
    assert "log.format" in text and "'text' or 'json'" in text, text[-2000:]
