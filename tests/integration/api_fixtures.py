"""Fixtures for the API tests: a migrated PostgreSQL database, apps over a local or S3 store,
tenants with keys, and an enqueue function that records instead of talking to a broker.

Import what a test module needs (tests/integration/conftest.py is owned elsewhere). The API
commits in its own sessions (and the SSE stream opens another), so these tests use one fresh
database per session and a fresh tenant per test instead of per-test rollback.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from api.deps import get_enqueue
from api.main import create_app
from streamguard.db.migrate import upgrade
from streamguard.db.session import make_engine, make_session_factory
from streamguard.db.tenants import create_tenant_key
from streamguard.settings import Settings
from tests.integration.db_fixtures import fresh_pg_database


@pytest.fixture(scope="session")
def api_db_url() -> Iterator[str]:
    """A fresh PostgreSQL database migrated to head, for every API test of the session."""
    with fresh_pg_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def api_sessions(api_db_url: str) -> Iterator[Callable[[], Session]]:
    """A session factory on the API database, for arranging rows the way a worker would."""
    engine = make_engine(api_db_url)
    yield make_session_factory(engine)
    engine.dispose()


@dataclass
class ApiHarness:
    client: TestClient
    settings: Settings
    sessions: Callable[[], Session]
    enqueued: list[str] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)  # tenant label -> API key
    tenant_ids: dict[str, str] = field(default_factory=dict)
    fail_enqueue: bool = False

    def auth(self, tenant: str = "a") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def add_tenant(self, label: str) -> None:
        with self.sessions() as session:
            tenant, key = create_tenant_key(session=session,
                                            tenant_name=f"{label}-{uuid.uuid4().hex[:10]}")
            session.commit()
        self.keys[label], self.tenant_ids[label] = key, tenant.id

    def upload(self, rows: list[dict[str, Any]] | bytes, tenant: str = "a",
               name: str = "train.jsonl") -> Any:
        data = rows if isinstance(rows, bytes) else \
            "".join(json.dumps(r) + "\n" for r in rows).encode()
        return self.client.post("/v1/datasets", headers=self.auth(tenant),
                                files={"file": (name, data, "application/x-ndjson")})

    def dataset_id(self, tenant: str = "a", start: int = 0) -> str:
        """A fresh upload; `start` varies its functions (splits must not be the same data)."""
        response = self.upload(good_rows(start=start), tenant)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job_body(self, tenant: str = "a", **overrides: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": "tiny",
            "datasets": {"train": {"dataset_id": self.dataset_id(tenant)},
                         "val": {"dataset_id": self.dataset_id(tenant, start=1000)}},
            "config": {"model": "tiny", "epochs": 2, "batch_size": 8, "max_seq_len": 64},
        }
        body.update(overrides)
        return body


def good_rows(n: int = 12, start: int = 0) -> list[dict[str, Any]]:
    return [{"func": f"int f{i}(int x) {{ return x + {i}; }}", "target": i % 2, "id": i}
            for i in range(start, start + n)]


def make_harness(tmp_path: Path, db_url: str, sessions: Callable[[], Session], *,
                 storage_uri: str | None = None, endpoint_url: str | None = None,
                 max_upload_mb: int = 2, redis_url: str | None = None,
                 broker_url: str | None = None, db: dict[str, Any] | None = None,
                 **api: Any) -> Iterator[ApiHarness]:
    """The app over these services; `db` overrides DbSettings fields, `api` ApiSettings
    fields."""
    settings = Settings(
        data_dir=tmp_path / "data", db={"url": db_url, **(db or {})},
        storage={"uri": storage_uri or (tmp_path / "artifacts").as_uri(),
                 "s3_endpoint_url": endpoint_url},
        redis={"url": redis_url}, broker={"url": broker_url},
        # Rate limits and quotas have their own tests (test_quotas_secrets.py); bulk callers
        # here (tables of hostile inputs, schemathesis) must not be throttled.
        api={"max_upload_mb": max_upload_mb, "sse_ping_s": 1, "rate_limit_per_minute": 0,
             "max_queued_jobs_per_tenant": 10_000, **api})
    app = create_app(settings)
    harness: ApiHarness

    def recording_enqueue() -> Callable[[str], None]:
        def enqueue(job_id: str) -> None:
            if harness.fail_enqueue:
                raise ConnectionError("broker down (test)")
            harness.enqueued.append(job_id)
        return enqueue

    app.dependency_overrides[get_enqueue] = recording_enqueue
    with TestClient(app) as client:
        harness = ApiHarness(client=client, settings=settings, sessions=sessions)
        harness.add_tenant("a")
        harness.add_tenant("b")
        yield harness


@pytest.fixture(name="api")
def api_fixture(tmp_path: Path, api_db_url: str,
        api_sessions: Callable[[], Session]) -> Iterator[ApiHarness]:
    """The API over a LocalArtifactStore, two fresh tenants `a` and `b`, recorded enqueues."""
    yield from make_harness(tmp_path, api_db_url, api_sessions)


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(name="redis_api")
def redis_api_fixture(tmp_path: Path, api_db_url: str,
                      api_sessions: Callable[[], Session]) -> Iterator[ApiHarness]:
    """The API with live SSE notifications through the local Redis."""
    yield from make_harness(tmp_path, api_db_url, api_sessions, redis_url=REDIS_URL)


@pytest.fixture(name="s3_api")
def s3_api_fixture(tmp_path: Path, api_db_url: str, api_sessions: Callable[[], Session],
           s3_server: str) -> Iterator[ApiHarness]:
    """The same API over an S3 store (moto server) in a fresh bucket with prefix `sg`."""
    from streamguard.storage import S3ArtifactStore

    bucket = f"sg-api-{uuid.uuid4().hex[:10]}"
    S3ArtifactStore(bucket, "sg", endpoint_url=s3_server).ensure_bucket()
    yield from make_harness(tmp_path, api_db_url, api_sessions,
                            storage_uri=f"s3://{bucket}/sg", endpoint_url=s3_server)


def epoch_record(epoch: int, **overrides: Any) -> dict[str, Any]:
    """A full epoch record with every key the training loop writes (see training/loop.py)."""
    record: dict[str, Any] = {
        "epoch": epoch, "step": 10 * epoch, "train_loss": 0.7, "val_loss": 0.69,
        "accuracy": 0.6, "precision": 0.55, "recall": 0.5, "f1": 0.1 * epoch, "mcc": 0.2,
        "roc_auc": 0.65, "confusion_matrix": [[1, 2], [3, 4]],
        "prediction_distribution": {"predicted_vulnerable": 6, "predicted_safe": 4,
                                    "actual_vulnerable": 7, "actual_safe": 3},
        "lr": 1e-4, "train_samples_per_s": 50.0, "epoch_time_s": 2.0, "warnings": [],
        "is_best": True, "collapse_streak": 0,
    }
    return record | overrides


def warning_payload(epoch: int, message: str) -> dict[str, Any]:
    """A `warning` event payload as the training loop writes it."""
    return {"epoch": epoch, "message": message,
            "prediction_distribution": epoch_record(epoch)["prediction_distribution"]}


def parse_sse(text: str) -> list[dict[str, str]]:
    """The messages of an SSE body (comment lines dropped): one dict of fields per message."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
        if "id" in fields:
            events.append(fields)
    return events


def make_archive() -> bytes:
    """A minimal model archive (`model/config.json` in a tar.gz), as a worker publishes it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b'{"model_type": "roberta"}'
        info = tarfile.TarInfo("model/config.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
