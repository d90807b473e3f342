"""End to end over the full stack: PostgreSQL, Redis (broker + SSE pub/sub), S3 (moto server
over HTTP), a uvicorn API subprocess and a real Celery worker subprocess, driven over HTTP only.

Every service must be there: a missing one fails the tests (nothing here skips). The stack is
shared by the module; the worker is started lazily so that the queued-cancel test can run with
nobody consuming the queue. Each process's log is printed when a test fails.

Run: .venv/bin/pytest -m integration tests/integration/test_e2e_stack.py
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from streamguard.db.migrate import upgrade
from streamguard.db.session import make_engine, make_session_factory
from streamguard.db.tenants import create_tenant_key
from streamguard.manifest import fetch_dir, read_pointer
from streamguard.storage import S3ArtifactStore
from tests.conftest import sample_jsonl
from tests.e2e.harness import (
    Api,
    Proc,
    api_cmd,
    base_env,
    check_completed_run,
    check_model_matches_worker,
    dump_logs,
    extract_archive,
    free_port,
    make_splits,
    wait_ready,
    worker_cmd,
)
from tests.integration.conftest import S3_TEST_ENV
from tests.integration.db_fixtures import fresh_pg_database

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/9"  # broker and pub/sub; the queue name is per run


@dataclass
class Stack:
    api: Api
    env: dict[str, str]
    queue: str
    tmp: Path
    tenant_id: str
    store: S3ArtifactStore
    api_proc: Proc
    worker: Proc | None = None
    worker_starts: int = 0

    @property
    def procs(self) -> list[Proc]:
        return [self.api_proc] + ([self.worker] if self.worker else [])

    def start_worker(self) -> Proc:
        if self.worker is not None and self.worker.alive():
            return self.worker
        self.worker_starts += 1
        node = f"e2e{self.worker_starts}-{uuid.uuid4().hex[:6]}@%h"
        self.worker = Proc(f"worker{self.worker_starts}", worker_cmd(self.queue, node),
                           self.env, self.tmp / "logs" / f"worker{self.worker_starts}.log")
        self.worker.wait_for_output(lambda line: line.rstrip().endswith("ready."), 120)
        self.api.procs = self.procs
        return self.worker

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.api.procs = [self.api_proc]


@pytest.fixture(scope="module")
def stack(s3_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("e2e_stack")
    bucket = f"sg-e2e-{uuid.uuid4().hex[:10]}"
    store = S3ArtifactStore(bucket, "sg", endpoint_url=s3_server)
    store.ensure_bucket()
    r = redis.Redis.from_url(REDIS_URL)
    try:
        r.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis unreachable at {REDIS_URL}: {exc}")
    queue = f"gpu-e2e-{uuid.uuid4().hex[:8]}"
    with fresh_pg_database() as db_url:
        upgrade(db_url)
        engine = make_engine(db_url)
        with make_session_factory(engine)() as session, session.begin():
            tenant, key = create_tenant_key(session=session, tenant_name="e2e")
            tenant_id = tenant.id
        engine.dispose()
        env = base_env()
        env.update(S3_TEST_ENV)
        env.update({
            "SG_ENV": "dev",
            "SG_DATA_DIR": str(tmp / "data"),
            "SG_DB__URL": db_url,
            "SG_REDIS__URL": REDIS_URL,
            "SG_BROKER__URL": REDIS_URL,
            "SG_STORAGE__URI": f"s3://{bucket}/sg",
            "SG_STORAGE__S3_ENDPOINT_URL": s3_server,
            "SG_WORKER__WORK_DIR": str(tmp / "work"),
            "SG_WORKER__QUEUE": queue,
            "SG_API__SSE_PING_S": "2",
        })
        port = free_port()
        api_proc = Proc("api", api_cmd(port), env, tmp / "logs" / "api.log")
        s = Stack(Api(f"http://127.0.0.1:{port}", key, [api_proc]), env, queue, tmp, tenant_id,
                  store, api_proc)
        try:
            wait_ready(s.api.base_url, [api_proc])
            yield s
        finally:
            s.stop_worker()
            api_proc.stop()
            r.delete(queue)
            r.close()


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, stack: Stack) -> Iterator[None]:
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        dump_logs(stack.procs)


@pytest.fixture(scope="module")
def splits(devign: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_splits(devign, tmp_path_factory.mktemp("e2e_devign"))


@pytest.fixture(scope="module")
def refs(stack: Stack, splits: dict[str, Path]) -> dict[str, dict[str, str]]:
    """The three splits uploaded once through POST /v1/datasets."""
    return stack.api.upload_splits(splits)


def test_cancel_while_queued_never_runs(stack: Stack, refs: dict[str, Any]) -> None:
    stack.stop_worker()  # nobody consumes the queue
    r = redis.Redis.from_url(REDIS_URL)
    job_id = stack.api.submit(refs)["id"]
    assert r.llen(stack.queue) == 1, "the task should wait in the Redis queue"
    cancelled = stack.api.cancel(job_id)
    assert cancelled["status"] == "cancelled" and cancelled["cancel_requested"], cancelled
    assert r.llen(stack.queue) == 1, "cancelling does not remove the message; the claim skips it"

    worker = stack.start_worker()
    worker.wait_for_output(f"job {job_id}: cancelled; nothing to do for this delivery", 60)
    worker.wait_for_output(lambda line: "Task worker.tasks.train_job[" in line
                           and "succeeded" in line and line.rstrip().endswith(": None"), 30)
    assert r.llen(stack.queue) == 0, "the worker drained the message"
    assert "Training" not in worker.text() and "epoch 1/" not in worker.text()

    job = stack.api.job(job_id)
    assert job["status"] == "cancelled", job
    assert job["started_at"] is None and job["attempts"] == 0, job
    assert job["progress"]["epoch"] == 0
    assert [(t["from_status"], t["to_status"]) for t in job["transitions"]][-1] == \
        ("queued", "cancelled"), job["transitions"]
    assert "running" not in {t["to_status"] for t in job["transitions"]}
    assert stack.api.get(f"/v1/jobs/{job_id}/metrics")["items"] == []
    assert stack.api.get(f"/v1/jobs/{job_id}/checkpoints")["items"] == []
    # the stream of an already-cancelled job replays and ends at once
    events = stack.api.follow(job_id, timeout_s=30)
    assert [e.kind for e in events if e.kind != "status"] == []
    assert events[-1].payload["status"] == "cancelled"
    assert not stack.store.list(f"tenants/{stack.tenant_id}/jobs/{job_id}/")


def test_full_stack_train_download_and_reload(stack: Stack, refs: dict[str, Any],
                                             splits: dict[str, Path], tmp_path: Path) -> None:
    stack.start_worker()
    job_id = stack.api.submit(refs)["id"]
    events = stack.api.follow(job_id, timeout_s=240)
    run = check_completed_run(stack.api, job_id, events, epochs=2)
    best = run["best"]

    # S3: a 307 to a presigned URL, fetched without our API key
    with stack.api.client() as c:
        r = c.get(f"/v1/jobs/{job_id}/checkpoints/best/download")
    assert r.status_code == 307, r.text
    location = r.headers["location"]
    assert location.startswith(stack.env["SG_STORAGE__S3_ENDPOINT_URL"]), location
    assert "Signature" in location or "X-Amz-Signature" in location, location
    archive = httpx.get(location, timeout=60.0)
    assert archive.status_code == 200, archive.text[:500]
    assert hashlib.sha256(archive.content).hexdigest() == best["sha256"]
    assert len(archive.content) == best["size_bytes"]

    # the training state is not in the download: fetch the best checkpoint folder from the store
    prefix = f"tenants/{stack.tenant_id}/jobs/{job_id}/checkpoints/"
    pointer = read_pointer(stack.store, prefix + "best.json")
    assert pointer is not None and pointer["sha256"] == best["sha256"], pointer
    state_dir = tmp_path / "best_checkpoint"
    fetch_dir(stack.store, pointer["key_prefix"], state_dir)  # sha256-verified

    model_dir = extract_archive(archive.content, tmp_path / "download")
    best_epoch = run["job"]["best_epoch"]
    check_model_matches_worker(model_dir, state_dir, splits["val"], run["metrics"][best_epoch],
                               best_epoch)


def test_cancel_while_running_keeps_last_checkpoint(stack: Stack, refs: dict[str, Any],
                                                    devign: Path, tmp_path: Path) -> None:
    stack.start_worker()
    # 20 epochs stretch the 10 % warmup over the first 2 epochs: with the 3,000-row sample,
    # epoch 1 ends at half the learning rate still predicting one class, and the guard (rightly)
    # stops the run as `collapsed` before the cancel is seen. 6,000 rows (375 steps an epoch)
    # end epoch 1 predicting both classes, so the cancel is what ends this run.
    train = sample_jsonl(devign / "train.jsonl", tmp_path / "train6000.jsonl", 6000, seed=1)
    big = {**refs, "train": {"dataset_id": stack.api.upload(train, "devign-train-6000")["id"]}}
    job_id = stack.api.submit(big, epochs=20)["id"]
    cancels: list[dict[str, Any]] = []

    def on_event(event: Any) -> None:
        if event.kind == "epoch" and not cancels:
            cancels.append(stack.api.cancel(job_id))

    events = stack.api.follow(job_id, timeout_s=180, on_event=on_event)
    assert cancels, "no epoch event arrived before the end of the stream"
    assert cancels[0]["status"] == "running" and cancels[0]["cancel_requested"], cancels[0]
    assert events[-1].kind == "status" and events[-1].payload["status"] == "cancelled", events[-1]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)

    job = stack.api.job(job_id)
    assert job["status"] == "cancelled", job
    done = [e.payload["epoch"] for e in events if e.kind == "epoch"]
    assert 1 <= len(done) < 20, done
    checkpoints = {c["name"]: c for c in stack.api.get(f"/v1/jobs/{job_id}/checkpoints")["items"]}
    assert "last" in checkpoints, checkpoints
    assert checkpoints["last"]["epoch"] == done[-1] and len(checkpoints["last"]["sha256"]) == 64
    pointer = read_pointer(stack.store, f"tenants/{stack.tenant_id}/jobs/{job_id}/checkpoints/"
                                        "last.json")
    assert pointer is not None and pointer["sha256"] == checkpoints["last"]["sha256"]
    assert stack.store.exists(pointer["archive_key"])
