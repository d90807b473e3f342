"""Shared world for the outsider's edge tests (test_hostile.py, test_tenant_matrix.py).

`world` is a module-scoped fixture parametrized over PostgreSQL (the session's `api_db_url`)
and SQLite (a file database under tmp_path, migrated with `upgrade`), both behind the same
`make_harness` as test_api.py. It arranges, the way the API and a worker would:

* tenant `a`: two good datasets (train/val), a one-class train split (all 0), a one-class val
  split (all 1), an empty split (row + empty object, as an S3 import would leave it), a queued
  job and a completed job with a metrics row, events and published `best`/`last` checkpoints;
* tenant `b`: a good dataset and a completed job whose checkpoint folder is in the store.

`World.counts()` is what "nothing stored" compares: jobs, datasets, events and stored objects of
a tenant, read through the harness's `sessions` and the store.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from streamguard.db import datasets as datasets_repo
from streamguard.db import jobs as jobs_repo
from streamguard.db import metrics as metrics_repo
from streamguard.db.migrate import upgrade
from streamguard.db.models import Dataset, EventKind, Job, JobEvent, JobStatus
from streamguard.db.session import make_engine, make_session_factory
from streamguard.sinks import ListSink
from streamguard.storage import ArtifactStore, store_from_uri
from streamguard.training.metrics import EvalMetrics
from streamguard.training.publish import CheckpointPublisher
from tests.integration.api_fixtures import ApiHarness, good_rows, make_harness

BACKENDS = ["postgresql", "sqlite"]

#: Names and contents that must never show up in another tenant's answers.
SECRET_JOB_NAME = "a-secret-job-name-7f3c"
SECRET_DATASET_NAME = "a-secret-dataset-91d2.jsonl"


@dataclass
class World:
    backend: str
    h: ApiHarness
    tmp: Path
    store: ArtifactStore
    datasets: dict[str, str] = field(default_factory=dict)  # role -> dataset id
    jobs: dict[str, str] = field(default_factory=dict)  # role -> job id
    events: dict[str, list[int]] = field(default_factory=dict)  # job role -> event ids
    sha256: dict[str, str] = field(default_factory=dict)  # what -> sha256 hex
    #: absolute server paths of checkpoint folders: role -> path
    ckpt_dirs: dict[str, Path] = field(default_factory=dict)
    known_jobs: set[str] = field(default_factory=set)

    @property
    def settings(self) -> Any:
        return self.h.settings

    def tenant(self, label: str) -> str:
        return self.h.tenant_ids[label]

    def body(self, **overrides: Any) -> dict[str, Any]:
        """A valid POST /v1/jobs body of tenant a (its good train/val datasets)."""
        body: dict[str, Any] = {
            "name": "hostile",
            "datasets": {"train": {"dataset_id": self.datasets["train"]},
                         "val": {"dataset_id": self.datasets["val"]}},
            "config": {"model": "tiny", "epochs": 2, "batch_size": 8, "max_seq_len": 64},
        }
        body.update(overrides)
        return body

    def config_body(self, **config: Any) -> dict[str, Any]:
        body = self.body()
        body["config"] = body["config"] | config
        return body

    def server_paths(self) -> list[str]:
        """Strings that would reveal where this server keeps its files."""
        paths = {str(self.tmp), str(self.settings.data_dir), str(self.settings.data_dir.resolve()),
                 str(self.settings.worker.work_dir)}
        root = getattr(self.store, "root", None)
        if root is not None:
            paths.add(str(root))
        return sorted(paths, key=len, reverse=True)

    def counts(self, label: str) -> dict[str, int]:
        """Jobs, datasets, events and stored objects of tenant `label`."""
        tenant_id = self.tenant(label)
        with self.h.sessions() as session:
            jobs = session.scalar(sa.select(sa.func.count()).select_from(Job)
                                  .where(Job.tenant_id == tenant_id))
            datasets = session.scalar(sa.select(sa.func.count()).select_from(Dataset)
                                      .where(Dataset.tenant_id == tenant_id))
            events = session.scalar(sa.select(sa.func.count(JobEvent.id))
                                    .join(Job, Job.id == JobEvent.job_id)
                                    .where(Job.tenant_id == tenant_id))
        objects = len(self.store.list(f"tenants/{tenant_id}/"))
        return {"jobs": int(jobs or 0), "datasets": int(datasets or 0),
                "events": int(events or 0), "objects": objects}

    def cancel_strays(self) -> list[str]:
        """Cancel queued jobs a case created by mistake, so they cannot eat the tenant's queue
        quota and turn later cases into 429s. Returns their ids (already reported by the case)."""
        strays = []
        with self.h.sessions() as session:
            rows = session.scalars(sa.select(Job).where(
                Job.tenant_id.in_([self.tenant("a"), self.tenant("b")]),
                Job.status == JobStatus.QUEUED.value)).all()
            for job in rows:
                if job.id not in self.known_jobs:
                    jobs_repo.transition(session=session, job=job,
                                         to_status=JobStatus.CANCELLED, reason="test cleanup")
                    strays.append(job.id)
            session.commit()
        return strays


# --- arranging rows the way the API and a worker would ------------------------------------------

def upload_rows(h: ApiHarness, rows: list[dict[str, Any]], tenant: str = "a",
                name: str = "train.jsonl") -> dict[str, Any]:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    response = h.client.post("/v1/datasets", headers=h.auth(tenant), data={"name": name},
                             files={"file": (name, data, "application/x-ndjson")})
    assert response.status_code == 201, response.text
    return dict(response.json())


def one_class_rows(target: int, n: int = 12) -> list[dict[str, Any]]:
    return [{"func": f"int g{target}_{i}(int y) {{ return y * {i}; }}", "target": target}
            for i in range(n)]


def arrange_empty_dataset(w: World, tenant: str = "a") -> str:
    """A dataset row whose object is empty (what an import of an empty file leaves)."""
    tenant_id = w.tenant(tenant)
    with w.h.sessions() as session:
        dataset = datasets_repo.create_dataset(
            session=session, tenant_id=tenant_id, name="empty.jsonl", storage_key="",
            size_bytes=0, sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            stats={"rows": 0, "n_safe": 0, "n_vulnerable": 0, "vulnerable_fraction": None,
                   "duplicates": {"rows": 0, "groups": 0, "conflicting_groups": 0},
                   "chars": None})
        dataset.storage_key = f"tenants/{tenant_id}/datasets/{dataset.id}.jsonl"
        w.store.put_bytes(b"", dataset.storage_key)
        session.commit()
        return str(dataset.id)


def submit_ok(h: ApiHarness, body: dict[str, Any], tenant: str = "a") -> dict[str, Any]:
    response = h.client.post("/v1/jobs", json=body, headers=h.auth(tenant))
    assert response.status_code == 201, response.text
    return dict(response.json())


def fake_model_dir(folder: Path) -> Path:
    """What a worker's `last` folder holds (contents do not matter to the API)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "roberta", "num_labels": 2,
                                                    "hidden_size": 128}))
    (folder / "model.safetensors").write_bytes(b"\0" * 256)
    (folder / "tokenizer.json").write_text(json.dumps({"version": "1.0", "secret": "a-vocab"}))
    (folder / "training_state.pt").write_bytes(b"\0" * 64)
    return folder


def eval_scores(f1: float = 0.5) -> EvalMetrics:
    return EvalMetrics(loss=0.69, accuracy=0.5, precision=0.5, recall=0.5, f1=f1, mcc=0.0,
                       roc_auc=0.5, confusion=[[3, 3], [3, 3]], predicted=[6, 6], actual=[6, 6])


def epoch_record(epoch: int) -> dict[str, Any]:
    """One epoch's record as streamguard.training.loop writes it."""
    val = eval_scores(0.3 + 0.1 * epoch).as_dict()
    record = {"epoch": epoch, "step": 2 * epoch, "train_loss": 0.7, "val_loss": val["loss"],
              **val, "lr": 1e-4, "train_samples_per_s": 10.0, "epoch_time_s": 1.0,
              "warnings": [], "is_best": epoch == 1, "collapse_streak": 0}
    record.pop("loss")
    return record


def arrange_finished_job(w: World, job_id: str, tenant: str, *,
                         status: JobStatus = JobStatus.COMPLETED) -> list[int]:
    """Run `job_id` like a worker: claim it, 2 epochs of metrics and events, publish `best` and
    `last` through the real CheckpointPublisher, record their rows, finish it. Returns the ids
    of the events written here."""
    with w.h.sessions() as session:
        token = jobs_repo.claim_job(session=session, job_id=job_id, worker_id="w-hostile",
                                    lease_s=600)
        session.commit()
    assert token is not None
    prefix = f"tenants/{w.tenant(tenant)}/jobs/{job_id}/"
    sink = ListSink()
    publisher = CheckpointPublisher(w.store, prefix, sink)
    event_ids: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in (1, 2):
            record = epoch_record(epoch)
            with w.h.sessions() as session:
                metrics_repo.upsert_epoch(session=session, job_id=job_id, token=token,
                                          epoch=epoch, record=record)
                event = metrics_repo.add_event(session=session, job_id=job_id,
                                               kind=EventKind.EPOCH, payload=record)
                jobs_repo.record_progress(session=session, job_id=job_id, token=token,
                                          current_epoch=epoch, best_epoch=1, best_metric=0.4)
                session.commit()
                event_ids.append(int(event.id))
            publisher.publish(fake_model_dir(Path(tmp) / f"e{epoch}"), epoch=epoch,
                              is_best=epoch == 1, metrics=record)
        for kind, payload in sink.events:
            assert kind == "checkpoint"
            with w.h.sessions() as session:
                metrics_repo.upsert_checkpoint(
                    session=session, job_id=job_id, token=token, name=payload["name"],
                    epoch=int(payload["epoch"]), key_prefix=payload["key_prefix"],
                    size_bytes=int(payload["size_bytes"]),
                    manifest={**payload["manifest"], "archive_key": payload["archive_key"],
                              "sha256": payload["sha256"]},
                    metrics=payload.get("metrics", {}))
                event = metrics_repo.add_event(session=session, job_id=job_id,
                                               kind=EventKind.CHECKPOINT, payload=payload)
                session.commit()
                event_ids.append(int(event.id))
            w.sha256[f"{tenant}-{payload['name']}"] = str(payload["sha256"])
    with w.h.sessions() as session:
        jobs_repo.finish_job(session=session, job_id=job_id, token=token, status=status,
                             message="completed 2 epochs", best_epoch=1, best_metric=0.4,
                             test_metrics=eval_scores().as_dict())
        session.commit()
    return event_ids


def build_world(backend: str, h: ApiHarness, tmp: Path) -> World:
    store = store_from_uri(h.settings.storage.uri,
                           endpoint_url=h.settings.storage.s3_endpoint_url)
    w = World(backend=backend, h=h, tmp=tmp, store=store)
    ds = upload_rows(h, good_rows(12), "a", SECRET_DATASET_NAME)
    w.datasets["train"], w.sha256["a-train"] = ds["id"], ds["sha256"]
    ds = upload_rows(h, good_rows(10)[::-1], "a", "val.jsonl")
    w.datasets["val"], w.sha256["a-val"] = ds["id"], ds["sha256"]
    w.datasets["test"] = upload_rows(h, good_rows(8)[::-1], "a", "test.jsonl")["id"]
    w.datasets["one_class_train"] = upload_rows(h, one_class_rows(0), "a", "safe-only.jsonl")["id"]
    w.datasets["one_class_val"] = upload_rows(h, one_class_rows(1), "a", "vuln-only.jsonl")["id"]
    w.datasets["empty"] = arrange_empty_dataset(w, "a")
    ds = upload_rows(h, good_rows(14), "b", "b-train.jsonl")
    w.datasets["b_train"], w.sha256["b-train"] = ds["id"], ds["sha256"]

    w.jobs["a_queued"] = submit_ok(h, w.body(name="a-queued"))["id"]
    w.jobs["a_completed"] = submit_ok(h, w.body(name=SECRET_JOB_NAME))["id"]
    w.events["a_completed"] = arrange_finished_job(w, w.jobs["a_completed"], "a")
    w.datasets["b_val"] = upload_rows(h, good_rows(8), "b", "b-val.jsonl")["id"]
    b_body = {"name": "b-job",
              "datasets": {"train": {"dataset_id": w.datasets["b_train"]},
                           "val": {"dataset_id": w.datasets["b_val"]}},
              "config": {"model": "tiny", "epochs": 2, "batch_size": 8, "max_seq_len": 64}}
    w.jobs["b_completed"] = submit_ok(h, b_body, "b")["id"]
    w.events["b_completed"] = arrange_finished_job(w, w.jobs["b_completed"], "b")
    w.known_jobs = set(w.jobs.values())
    root = getattr(store, "root", None)
    assert root is not None, "the hostile world expects a local store"
    for label in ("a", "b"):
        job = w.jobs[f"{label}_completed"]
        folder = Path(root) / f"tenants/{w.tenant(label)}/jobs/{job}/checkpoints/epoch-0001"
        assert (folder / "config.json").is_file(), folder
        w.ckpt_dirs[label] = folder
    return w


def _sqlite_sessions(url: str) -> tuple[Callable[[], Session], Any]:
    upgrade(url)
    engine = make_engine(url)
    return make_session_factory(engine), engine


@pytest.fixture(scope="module", params=BACKENDS)
def world(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The API on PostgreSQL or SQLite with the arranged tenants `a` and `b` (see the module)."""
    backend = request.param
    tmp = tmp_path_factory.mktemp(f"hostile-{backend}")
    engine = None
    if backend == "postgresql":
        url = request.getfixturevalue("api_db_url")
        sessions: Callable[[], Session] = request.getfixturevalue("api_sessions")
    else:
        url = f"sqlite:///{tmp / 'streamguard.db'}"
        sessions, engine = _sqlite_sessions(url)
    harnesses = make_harness(tmp, url, sessions)
    try:
        h = next(harnesses)
        yield build_world(backend, h, tmp)
    finally:
        harnesses.close()
        if engine is not None:
            engine.dispose()


# --- requests -----------------------------------------------------------------------------------

@dataclass
class Req:
    """One request of a case. `echo`: strings the client itself sent (a message may quote them;
    that is not a leak of a server path)."""

    method: str
    url: str
    json: Any = None
    content: Any = None
    params: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    tenant: str | None = "a"
    echo: tuple[str, ...] = ()
    stream: bool = False


def send(w: World, req: Req) -> httpx.Response:
    headers = (w.h.auth(req.tenant) if req.tenant else {}) | req.headers
    kwargs: dict[str, Any] = {"headers": headers}
    if req.json is not None:
        kwargs["json"] = req.json
    if req.content is not None:
        kwargs["content"] = req.content
    if req.params is not None:
        kwargs["params"] = req.params
    return w.h.client.request(req.method, req.url, **kwargs)


def multipart(parts: list[tuple[str, str | None, bytes, str | None]],
              boundary: str | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body built by hand (so names may hold raw control bytes).
    parts: (field name, filename or None, content, content type or None)."""
    boundary = boundary or f"hostile{uuid.uuid4().hex}"
    out = bytearray()
    for name, filename, data, ctype in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode("utf-8", "surrogateescape")
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()
