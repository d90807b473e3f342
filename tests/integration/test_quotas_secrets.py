"""Per-tenant job quotas, the per-key request rate, SigV4 presigned URLs, and nothing of the
server (paths, hosts, ports) in what a tenant or an unauthenticated caller can read.

Real PostgreSQL, Redis on 127.0.0.1:6379 and a moto S3 server.
Run: .venv/bin/pytest -m integration tests/integration/test_quotas_secrets.py
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.main import create_app
from api.ratelimit import (
    BUCKET_ID_LEN,
    LEASE_S,
    REDIS_KEY_PREFIX,
    LocalRateLimiter,
    RedisRateLimiter,
)
from streamguard.db import jobs as jobs_repo
from streamguard.db.models import JobStatus
from streamguard.db.tenants import hash_key
from streamguard.errors import StorageError, TooManyRequests
from streamguard.settings import ApiSettings, Settings
from streamguard.storage import ArtifactNotFound, LocalArtifactStore, S3ArtifactStore
from tests.integration import api_fixtures
from tests.integration.api_fixtures import REDIS_URL, ApiHarness
from tests.integration.conftest import free_port

api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions

pytestmark = pytest.mark.integration

@contextmanager
def quota_harness(tmp_path: Path, db_url: str, sessions: Callable[[], Session], *,
                  redis_url: str | None = None, broker_url: str | None = None,
                  **api: Any) -> Iterator[ApiHarness]:
    """api_fixtures.make_harness with the deployment's own limits (make_harness switches the
    rate limit and the queued-job quota off for bulk callers), `api` overriding them."""
    limits = ApiSettings()
    with contextmanager(api_fixtures.make_harness)(
            tmp_path, db_url, sessions, redis_url=redis_url, broker_url=broker_url,
            **{"rate_limit_per_minute": limits.rate_limit_per_minute,
               "max_queued_jobs_per_tenant": limits.max_queued_jobs_per_tenant} | api) as harness:
        yield harness


def submit(api: ApiHarness, body: dict[str, Any], tenant: str = "a",
           key: str | None = None) -> httpx.Response:
    headers = api.auth(tenant) | ({"Idempotency-Key": key} if key else {})
    return api.client.post("/v1/jobs", json=body, headers=headers)


def job_ids(api: ApiHarness, tenant: str = "a") -> list[str]:
    page = api.client.get("/v1/jobs?limit=200", headers=api.auth(tenant)).json()
    return [job["id"] for job in page["items"]]


def assert_429(response: httpx.Response) -> int:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "too_many_requests"
    retry_after = int(response.headers["retry-after"])
    assert retry_after >= 1 and f"{retry_after}" in response.headers["retry-after"]
    return retry_after


# --- per-tenant job quotas ---------------------------------------------------------------------

@pytest.fixture
def quota_api(tmp_path: Path, api_db_url: str,
              api_sessions: Callable[[], Session]) -> Iterator[ApiHarness]:
    with quota_harness(tmp_path, api_db_url, api_sessions, max_queued_jobs_per_tenant=2,
                       max_running_jobs_per_tenant=1, rate_limit_per_minute=0) as harness:
        yield harness


def test_tenant_over_its_queued_limit_gets_429_and_others_are_not_slowed(
        quota_api: ApiHarness) -> None:
    body_a, body_b = quota_api.job_body("a"), quota_api.job_body("b")
    first = submit(quota_api, body_a, key="first")
    assert first.status_code == 201, first.text
    assert submit(quota_api, body_a).status_code == 201
    refused = submit(quota_api, body_a)
    assert assert_429(refused) >= 1
    message = refused.json()["error"]["message"]
    assert "2 queued jobs" in message and "limit per tenant is 2" in message
    assert len(job_ids(quota_api)) == 2 and len(quota_api.enqueued) == 2  # nothing stored

    start = time.monotonic()
    other = submit(quota_api, body_b, tenant="b")
    assert other.status_code == 201, other.text
    assert "retry-after" not in other.headers and time.monotonic() - start < 5

    # An idempotent replay creates nothing, so the quota does not apply to it.
    replay = submit(quota_api, body_a, key="first")
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]

    # A cancelled job frees its slot.
    cancel = quota_api.client.post(f"/v1/jobs/{first.json()['id']}/cancel",
                                   headers=quota_api.auth("a"))
    assert cancel.status_code == 200, cancel.text
    assert submit(quota_api, body_a).status_code == 201


def test_tenant_at_its_running_limit_gets_429_until_a_job_finishes(
        quota_api: ApiHarness) -> None:
    body = quota_api.job_body("a")
    job_id = submit(quota_api, body).json()["id"]
    with quota_api.sessions() as session:  # a worker takes it: running 1 of 1
        token = jobs_repo.claim_job(session=session, job_id=job_id, worker_id="w", lease_s=60)
        session.commit()
    assert token is not None
    refused = submit(quota_api, body)
    assert_429(refused)
    assert "1 running jobs" in refused.json()["error"]["message"]
    assert submit(quota_api, quota_api.job_body("b"), tenant="b").status_code == 201

    with quota_api.sessions() as session:
        jobs_repo.finish_job(session=session, job_id=job_id, token=token,
                             status=JobStatus.COMPLETED, message="done")
        session.commit()
    assert submit(quota_api, body).status_code == 201


def test_concurrent_submissions_cannot_overshoot_the_quota(quota_api: ApiHarness) -> None:
    """The tenant's row is locked while it is counted, so two requests never share a slot."""
    body = quota_api.job_body("a")
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = sorted(pool.map(lambda _i: submit(quota_api, body).status_code, range(6)))
    assert codes == [201, 201, 429, 429, 429, 429]
    assert len(job_ids(quota_api)) == 2


def test_429_is_mapped_by_the_error_handler(tmp_path: Path) -> None:
    app: FastAPI = create_app(Settings(data_dir=tmp_path, api={"rate_limit_per_minute": 0}))

    @app.get("/boom")
    def boom() -> None:
        raise TooManyRequests("slow down", retry_after_s=7)

    with TestClient(app) as client:
        response = client.get("/boom")
    assert response.status_code == 429 and response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "too_many_requests"


# --- request rate per API key ------------------------------------------------------------------

def exhaust(api: ApiHarness, tenant: str, allowed: int) -> httpx.Response:
    for i in range(allowed):
        response = api.client.get("/v1/jobs", headers=api.auth(tenant))
        assert response.status_code == 200, (i, response.text)
    return api.client.get("/v1/jobs", headers=api.auth(tenant))


def test_rate_limit_in_process(tmp_path: Path, api_db_url: str,
                               api_sessions: Callable[[], Session]) -> None:
    with quota_harness(tmp_path, api_db_url, api_sessions, rate_limit_per_minute=3) as api:
        retry_after = assert_429(exhaust(api, "a", 3))
        assert 15 <= retry_after <= 20  # 3 per minute: one token back every 20 s
        assert "3 requests per minute" in api.client.get(
            "/v1/jobs", headers=api.auth("a")).json()["error"]["message"]
        # Another key has its own bucket; a refused key costs nothing (no bucket, 401).
        assert api.client.get("/v1/jobs", headers=api.auth("b")).status_code == 200
        bad = api.client.get("/v1/jobs", headers={"Authorization": "Bearer sg_nope"})
        assert bad.status_code == 401
        assert api.client.get("/healthz").status_code == 200  # unauthenticated: not limited


def test_rate_limit_off_with_zero(tmp_path: Path, api_db_url: str,
                                  api_sessions: Callable[[], Session]) -> None:
    with quota_harness(tmp_path, api_db_url, api_sessions, rate_limit_per_minute=0) as api:
        for _ in range(30):
            assert api.client.get("/v1/jobs", headers=api.auth("a")).status_code == 200


def test_rate_limit_in_redis_is_shared_and_keyed_by_hash(
        tmp_path: Path, api_db_url: str, api_sessions: Callable[[], Session]) -> None:
    with quota_harness(tmp_path, api_db_url, api_sessions, redis_url=REDIS_URL,
                             rate_limit_per_minute=4) as api:
        for _ in range(2):
            assert api.client.get("/v1/jobs", headers=api.auth("a")).status_code == 200
        # A second API process (another app on the same Redis) shares the key's bucket.
        second = create_app(api.settings)
        with TestClient(second) as other:
            for _ in range(2):
                assert other.get("/v1/jobs", headers=api.auth("a")).status_code == 200
            assert_429(other.get("/v1/jobs", headers=api.auth("a")))
        assert_429(api.client.get("/v1/jobs", headers=api.auth("a")))
        assert api.client.get("/v1/jobs", headers=api.auth("b")).status_code == 200

        client = redis.Redis.from_url(REDIS_URL)
        bucket = REDIS_KEY_PREFIX + hash_key(api.keys["a"])[:BUCKET_ID_LEN]
        assert client.exists(bucket) and 0 < client.pttl(bucket) <= 61_000
        stored = [k.decode() for k in client.scan_iter(f"{REDIS_KEY_PREFIX}*")]
        assert not any(api.keys["a"] in k or api.keys["a"][:12] in k for k in stored)


def test_rate_limit_allows_requests_when_redis_is_down(
        tmp_path: Path, api_db_url: str, api_sessions: Callable[[], Session],
        caplog: pytest.LogCaptureFixture) -> None:
    down = f"redis://:{uuid.uuid4().hex}@127.0.0.1:{free_port()}/0"
    with quota_harness(tmp_path, api_db_url, api_sessions, redis_url=down,
                             rate_limit_per_minute=100) as api:
        with caplog.at_level(logging.WARNING, logger="api.ratelimit"):
            start = time.monotonic()
            for _ in range(5):
                assert api.client.get("/v1/jobs", headers=api.auth("a")).status_code == 200
            assert time.monotonic() - start < 5  # no socket timeout paid on every request
        warnings = [r for r in caplog.records if r.name == "api.ratelimit"]
        assert len(warnings) == 1 and "Redis failed" in warnings[0].getMessage()


def evalsha_calls(client: redis.Redis) -> int:
    """Script calls the Redis server has answered so far (its own count)."""
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_a_busy_key_leases_tokens_instead_of_a_redis_call_per_request(
        tmp_path: Path, api_db_url: str, api_sessions: Callable[[], Session]) -> None:
    """600 per minute: a process leases up to 10 tokens (one second of refill) per Redis call,
    and the shared bucket still counts every token handed out."""
    client = redis.Redis.from_url(REDIS_URL)
    with quota_harness(tmp_path, api_db_url, api_sessions, redis_url=REDIS_URL,
                       rate_limit_per_minute=600) as api:
        before, started = evalsha_calls(client), time.monotonic()
        for i in range(40):
            response = api.client.get("/v1/jobs", headers=api.auth("a"))
            assert response.status_code == 200, (i, response.text)
        calls, took = evalsha_calls(client) - before, time.monotonic() - started
        # leases of 1, 2, 4, 8, 10, 10, 10 tokens (while each is used up within LEASE_S)
        assert 7 <= calls <= 7 + 2 * int(took / LEASE_S), (calls, took)
        bucket = REDIS_KEY_PREFIX + hash_key(api.keys["a"])[:BUCKET_ID_LEN]
        left = float(client.hget(bucket, "tokens") or 0)
        # every token handed out left the bucket (it refills 10 per second meanwhile), and at
        # most one lease (10) is held back
        assert 600 - 40 - 10 <= left <= 600 - 40 + 10 * took + 1, (left, took)


def test_leases_share_the_bucket_exactly_between_processes() -> None:
    """Two processes' limiters on one key: together they let through the bucket's capacity
    and no more, and a lease unused after LEASE_S is dropped (the next call asks for one)."""
    now = [0.0]
    first = RedisRateLimiter(180, REDIS_URL, clock=lambda: now[0])  # leases up to 3
    second = RedisRateLimiter(180, REDIS_URL, clock=lambda: now[0])
    bucket = uuid.uuid4().hex[:BUCKET_ID_LEN]
    allowed = 0
    try:
        for i in range(400):
            try:
                (first if i % 3 else second).check(bucket)
                allowed += 1
            except TooManyRequests:
                pass
        # Redis refills 3 per second of its own clock while this runs.
        assert 180 <= allowed <= 182, allowed
        assert first.lease_max == 3
        now[0] += LEASE_S  # whatever either holds is gone now
        assert not first.take_leased(bucket) and not second.take_leased(bucket)
        assert first._wanted(bucket, now[0]) == 1
    finally:
        first.client.delete(REDIS_KEY_PREFIX + bucket)


def test_a_limit_under_two_per_second_takes_one_token_per_redis_call() -> None:
    limiter = RedisRateLimiter(119, REDIS_URL)
    bucket = uuid.uuid4().hex[:BUCKET_ID_LEN]
    try:
        before = evalsha_calls(limiter.client)
        for _ in range(5):
            limiter.check(bucket)
            assert not limiter.take_leased(bucket)
        assert evalsha_calls(limiter.client) - before == 5
    finally:
        limiter.client.delete(REDIS_KEY_PREFIX + bucket)


def test_local_bucket_refills_at_the_configured_rate() -> None:
    now = [0.0]
    limiter = LocalRateLimiter(60, clock=lambda: now[0])  # one per second, burst of 60
    for _ in range(60):
        limiter.check("k")
    with pytest.raises(TooManyRequests) as info:
        limiter.check("k")
    assert info.value.retry_after_s == 1
    now[0] += 2.0
    limiter.check("k")
    limiter.check("k")
    with pytest.raises(TooManyRequests):
        limiter.check("k")
    limiter.check("other")


# --- SigV4 presigned URLs ----------------------------------------------------------------------

def test_presigned_urls_are_sigv4_and_download(s3_store: S3ArtifactStore) -> None:
    s3_store.put_bytes(b"model bytes", "jobs/1/model.tar.gz")
    url = s3_store.presigned_get_url("jobs/1/model.tar.gz", expires_s=60, filename="m.tar.gz")
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Signature=" in url
    assert "AWSAccessKeyId=" not in url  # the SigV2 form
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == b"model bytes"
    config = s3_store.client.meta.config
    assert config.signature_version == "s3v4"
    # botocore reads max_attempts=3 as three retries: four attempts in all
    assert config.retries == {"total_max_attempts": 4, "mode": "standard"}
    assert config.connect_timeout and config.read_timeout


# --- nothing of the server in what callers read ------------------------------------------------

def test_storage_errors_name_the_key_not_the_server(tmp_path: Path, s3_server: str) -> None:
    local = LocalArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactNotFound) as info:
        local.get_bytes("tenants/t1/jobs/j1/checkpoints/best/model.tar.gz")
    assert str(tmp_path) not in info.value.message and "file:" not in info.value.message
    assert "'jobs/j1/checkpoints/best/model.tar.gz'" in info.value.message

    s3 = S3ArtifactStore("sg-missing-bucket", "secret-prefix", endpoint_url=s3_server)
    with pytest.raises(StorageError) as err:
        s3.get_bytes("tenants/t1/datasets/d1.jsonl")
    assert "NoSuchBucket" in err.value.message
    for leak in ("127.0.0.1", s3_server, "sg-missing-bucket", "secret-prefix", "s3://"):
        assert leak not in err.value.message

    unreachable = f"http://127.0.0.1:{free_port()}"
    s3 = S3ArtifactStore("bucket", endpoint_url=unreachable)
    with pytest.raises(StorageError) as err:
        s3.get_bytes("tenants/t1/x.json")
    assert "could not be reached" in err.value.message
    assert "127.0.0.1" not in err.value.message and unreachable not in err.value.message


def test_readyz_shows_no_path_host_or_port(tmp_path: Path, api_db_url: str,
                                           api_sessions: Callable[[], Session],
                                           caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    with quota_harness(tmp_path, api_db_url, api_sessions,
                             broker_url=f"redis://:{uuid.uuid4().hex}@127.0.0.1:{port}/1") as api:
        store = api.client.app.state.store  # type: ignore[attr-defined]
        store.root.rename(tmp_path / "moved")
        with caplog.at_level(logging.WARNING, logger="api.routes.health"):
            response = api.client.get("/readyz")
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["message"] == "not ready: broker, store unreachable"
        details = {d["field"]: d["message"] for d in error["details"]}
        assert set(details) == {"database", "broker", "store"}
        assert details["broker"].endswith("broker: unreachable")
        assert details["store"].endswith("store: unreachable")
        assert details["database"].endswith("database: ok")
        for leak in (str(tmp_path), "artifacts", "127.0.0.1", str(port), "localhost"):
            assert leak not in response.text
        logged = " ".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
        assert "'store'" in logged and "'broker'" in logged  # the cause is in the server log

        store_root = tmp_path / "moved"
        store_root.rename(store.root)


def test_readyz_ok_is_generic(tmp_path: Path, api_db_url: str,
                              api_sessions: Callable[[], Session]) -> None:
    with quota_harness(tmp_path, api_db_url, api_sessions) as api:
        response = api.client.get("/readyz")
        assert response.status_code == 200, response.text
        checks = response.json()["checks"]
        assert {name: c["detail"] for name, c in checks.items()} == {
            "database": "database: ok", "broker": "broker: ok", "store": "store: ok"}
        assert str(tmp_path) not in response.text
