"""The Celery task body against real PostgreSQL and a local artifact store.

`train_job.run(job_id)` is called directly (no eager mode, no broker), as a worker would run it:
claim with a lease, heartbeat, fetch datasets, train a tiny model, record epochs, events and
checkpoints, finish. Redelivery is simulated by a crash (a BaseException, like a killed process:
the task cannot mark the job failed) followed by lease expiry and a second delivery. What the
task would send to the broker (a deferred delivery, a re-queue) is recorded in `World.sent`.

Run: .venv/bin/pytest -m integration tests/integration/test_worker.py
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from streamguard.db import Job, JobEvent, JobStatus
from streamguard.db.datasets import create_dataset
from streamguard.db.jobs import (
    StaleLease,
    claim_job,
    create_job,
    heartbeat,
    list_transitions,
    request_cancel,
)
from streamguard.db.metrics import list_checkpoints, list_epochs, list_steps
from streamguard.db.migrate import upgrade
from streamguard.db.models import utcnow
from streamguard.db.tenants import get_or_create_tenant
from streamguard.settings import Settings, get_settings
from streamguard.storage import LocalArtifactStore, sha256_file
from streamguard.synth import synth_examples, write_jsonl
from tests.integration.db_fixtures import fresh_pg_database
from worker import runtime, tasks
from worker.runtime import session_factory
from worker.sinks import DbMetricSink
from worker.tasks import train_job
from worker.write_behind import WriteBehindSteps

pytestmark = pytest.mark.integration

# A from-scratch model needs ~100+ optimizer steps before its first evaluation or it still
# predicts one class and the collapse guard (rightly) stops the run: 1,200 rows / batch 8 = 150.
CONFIG = {"model": "tiny", "max_seq_len": 96, "tokenizer_vocab_size": 600, "batch_size": 8,
          "lr": 1e-3, "epochs": 2, "early_stopping_patience": 0}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on 2 shared cores, 2 OpenMP threads spin against other processes
    (an epoch measured 155 s instead of 8 s while another test run was busy)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def worker_db_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("synth")
    sizes = {"train": 1200, "val": 100, "test": 100}
    for i, (name, n) in enumerate(sizes.items()):
        write_jsonl(synth_examples(n, seed=i, vulnerable_fraction=0.46, id_prefix=name),
                    folder / f"{name}.jsonl")
    return {name: folder / f"{name}.jsonl" for name in sizes}


# a step record as the loop logs it (tests set epoch and step)
STEP = {"epoch_progress": 0.5, "total_steps": 30, "train_loss": 0.7, "lr": 1e-3,
        "grad_norm": 1.0, "samples_per_s": 100.0}


@dataclass
class World:
    settings: Settings
    sessions: Callable[[], Session]
    store: LocalArtifactStore
    splits: dict[str, Path]
    sent: list[tuple[str, float | None]]  # (job_id, countdown) the task sent to the broker

    def submit(self, tenant: str = "acme", **overrides: Any) -> str:
        """A tenant with uploaded datasets and a queued job; returns the job id."""
        with self.sessions() as session, session.begin():
            tenant_id = get_or_create_tenant(session=session, name=tenant).id
            refs: dict[str, Any] = {}
            for split, path in self.splits.items():
                ds = create_dataset(session=session, tenant_id=tenant_id, name=split,
                                    storage_key="pending", size_bytes=path.stat().st_size,
                                    sha256=sha256_file(path))
                ds.storage_key = f"tenants/{tenant_id}/datasets/{ds.id}.jsonl"
                self.store.put_file(path, ds.storage_key)
                refs[split] = {"dataset_id": ds.id}  # `uri` refs name S3 objects only
            spec = {"name": "t", "datasets": refs, "config": CONFIG, "max_runtime_s": None}
            spec.update(overrides)
            return create_job(session=session, tenant_id=tenant_id, spec=spec,
                              total_epochs=CONFIG["epochs"]).id

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def events(self, job_id: str) -> list[JobEvent]:
        with self.sessions() as session:
            return list(session.scalars(sa.select(JobEvent).where(JobEvent.job_id == job_id)
                                        .order_by(JobEvent.id)))

    def claim(self, job_id: str, worker_id: str) -> int | None:
        """claim_job in its own transaction, with a 30 s lease: the fencing token, or None."""
        with self.sessions() as session, session.begin():
            return claim_job(session=session, job_id=job_id, worker_id=worker_id, lease_s=30)

    def expire_lease(self, job_id: str) -> None:
        with self.sessions() as session, session.begin():
            session.execute(sa.update(Job).where(Job.id == job_id).values(
                lease_expires_at=utcnow() - timedelta(seconds=1)))


@pytest.fixture
def world(worker_db_url: str, splits: dict[str, Path], tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {"SG_DATA_DIR": str(tmp_path / "data"), "SG_DB__URL": worker_db_url,
                        "SG_STORAGE__URI": (tmp_path / "store").as_uri(),
                        "SG_WORKER__LEASE_S": "30", "SG_WORKER__HEARTBEAT_S": "1"}.items():
        monkeypatch.setenv(name, value)
    for name in ("SG_REDIS__URL", "SG_BROKER__URL", "SG_WORKER__WORK_DIR"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    settings = get_settings()
    sent: list[tuple[str, float | None]] = []

    def make_enqueue(_app: object, _queue: str) -> Callable[..., None]:
        def enqueue(job_id: str, countdown: float | None = None) -> None:
            sent.append((job_id, countdown))
        return enqueue

    monkeypatch.setattr(runtime, "make_enqueue", make_enqueue)
    yield World(settings, session_factory(worker_db_url), LocalArtifactStore(tmp_path / "store"),
                splits, sent)
    get_settings.cache_clear()


def epoch_events(events: list[JobEvent]) -> list[int]:
    return [e.payload["epoch"] for e in events if e.kind == "epoch"]


def test_train_job_trains_records_and_finishes(world: World) -> None:
    job_id = world.submit()

    assert train_job.run(job_id) == "completed"

    job = world.job(job_id)
    assert job.status == JobStatus.COMPLETED and job.outcome_message == "completed 2 epoch(s)"
    assert job.lease_owner is None and job.current_epoch == 2 and job.attempts == 1
    assert job.best_epoch in (1, 2) and job.test_metrics and "f1" in job.test_metrics
    with world.sessions() as session:
        epochs = list_epochs(session=session, job_id=job_id)
        checkpoints = {c.name: c for c in list_checkpoints(session=session, job_id=job_id)}
    assert [e.epoch for e in epochs] == [1, 2]
    for row in epochs:
        dist = row.record["prediction_distribution"]
        assert dist["predicted_vulnerable"] + dist["predicted_safe"] == 100
    events = world.events(job_id)
    statuses = [e.payload["status"] for e in events if e.kind == "status"]
    assert statuses == ["queued", "running", "completed"]
    assert events[0].kind == "status" and events[-1].kind == "status"
    assert epoch_events(events) == [1, 2]
    kinds = [e.kind for e in events if e.kind not in ("warning", "step")]
    # each epoch record is followed by its checkpoint event(s) before the next epoch
    assert kinds[:4] == ["status", "status", "epoch", "checkpoint"]
    # step metrics: the epoch's steps come before its record, each logged step once
    steps = [e.payload for e in events if e.kind == "step"]
    order = [e.kind for e in events]
    assert steps and steps[0]["epoch"] == 1 and order.index("step") < order.index("epoch")
    with world.sessions() as session:
        step_rows = list_steps(session=session, job_id=job_id)
    assert [r.step for r in step_rows] == [p["step"] for p in steps]
    assert [r.step for r in step_rows] == sorted({r.step for r in step_rows})
    total = steps[0]["total_steps"]
    assert step_rows[-1].step == total and job.current_step == total == job.total_steps
    assert all(p["train_loss"] > 0 and p["lr"] >= 0 and p["grad_norm"] is not None
               for p in steps)
    assert kinds[-1] == "status" and kinds.count("epoch") == 2
    assert set(checkpoints) == {"best", "last"} and checkpoints["last"].epoch == 2
    prefix = f"tenants/{job.tenant_id}/jobs/{job_id}/checkpoints/"
    for ckpt in checkpoints.values():
        assert ckpt.key_prefix == f"{prefix}epoch-{ckpt.epoch:04d}"
        archive = world.store.get_bytes(ckpt.manifest["archive_key"])
        assert hashlib.sha256(archive).hexdigest() == ckpt.manifest["sha256"]
        assert len(archive) == ckpt.size_bytes
    assert world.store.exists(f"{prefix}last.json")
    assert not (world.settings.worker.work_dir / job_id).exists()  # scratch space cleaned


def test_stale_token_cannot_write(world: World) -> None:
    job_id = world.submit()
    first = world.claim(job_id, "w1")
    assert first is not None
    assert world.claim(job_id, "w2") is None  # a live lease is not taken over
    world.expire_lease(job_id)
    second = world.claim(job_id, "w2")
    assert second == first + 1

    stale = DbMetricSink(world.sessions, job_id, first)
    with pytest.raises(StaleLease):
        stale.log_epoch({"epoch": 1, "f1": 0.5})
    with pytest.raises(StaleLease):
        stale.event("warning", {"epoch": 1, "message": "late"})
    with world.sessions() as session, session.begin():
        assert not heartbeat(session=session, job_id=job_id, token=first, lease_s=30).ok
    DbMetricSink(world.sessions, job_id, second).log_epoch({"epoch": 1, "f1": 0.5})
    assert epoch_events(world.events(job_id)) == [1]
    # and the task's second delivery, arriving while w2's lease is live, is sent again for
    # when that lease runs out (never dropped)
    assert train_job.run(job_id) is None
    ((sent_id, countdown),) = world.sent
    assert sent_id == job_id and countdown is not None and 25 < countdown <= 31


def test_an_epoch_run_again_after_a_takeover_is_marked_replayed(world: World) -> None:
    """The race CI found: attempt 1 records epoch 2, then loses the job before epoch 2's
    checkpoint is the resume point; attempt 2 runs epoch 2 again. One row per epoch stays, and
    the second epoch-2 event says it replaces the first."""
    job_id = world.submit()
    first = world.claim(job_id, "w1")
    assert first is not None
    step = {**STEP, "epoch": 2}
    for epoch in (1, 2):
        DbMetricSink(world.sessions, job_id, first).log_epoch({"epoch": epoch, "f1": 0.4})
    DbMetricSink(world.sessions, job_id, first).log_step({**step, "step": 15})
    world.expire_lease(job_id)
    second = world.claim(job_id, "w2")
    assert second == first + 1
    for epoch in (2, 3):  # resumed after epoch 1
        DbMetricSink(world.sessions, job_id, second).log_step({**step, "step": epoch * 10 - 5,
                                                               "epoch": epoch,
                                                               "train_loss": 0.5})
        DbMetricSink(world.sessions, job_id, second).log_epoch({"epoch": epoch, "f1": 0.6})
    steps = [(e.payload["step"], e.payload.get("replayed", False))
             for e in world.events(job_id) if e.kind == "step"]
    assert steps == [(15, False), (15, True), (25, False)]
    with world.sessions() as session:
        step_rows = list_steps(session=session, job_id=job_id)
    assert [(r.step, r.record["train_loss"]) for r in step_rows] == [(15, 0.5), (25, 0.5)]
    assert world.job(job_id).current_step == 25 and world.job(job_id).total_steps == 30
    events = [e for e in world.events(job_id) if e.kind == "epoch"]
    assert [(e.payload["epoch"], e.payload.get("replayed", False)) for e in events] == \
        [(1, False), (2, False), (2, True), (3, False)]
    with world.sessions() as session:
        rows = list_epochs(session=session, job_id=job_id)
    assert [(r.epoch, r.record["f1"], r.record.get("replayed", False)) for r in rows] == \
        [(1, 0.4, False), (2, 0.6, True), (3, 0.6, False)]


def test_steps_written_behind_the_training_thread_keep_their_order_and_their_fence(
        world: World) -> None:
    """What the task's sink (WriteBehindSteps around DbMetricSink) commits: queued steps in
    one batch, in order, before the epoch record after them; a worker that lost the lease
    gets StaleLease from its next call and writes no step."""
    job_id = world.submit()
    first = world.claim(job_id, "w1")
    assert first is not None
    step = {**STEP, "epoch": 1}
    sink = WriteBehindSteps(DbMetricSink(world.sessions, job_id, first), min_interval_s=3600)
    for n in (5, 10, 15):
        sink.log_step({**step, "step": n})
    sink.log_epoch({"epoch": 1, "f1": 0.5})
    sink.close()
    assert [(e.kind, e.payload.get("step", e.payload.get("epoch")))
            for e in world.events(job_id)][-4:] == [("step", 5), ("step", 10), ("step", 15),
                                                    ("epoch", 1)]
    with world.sessions() as session:
        assert [r.step for r in list_steps(session=session, job_id=job_id)] == [5, 10, 15]
    assert world.job(job_id).current_step == 15 and world.job(job_id).total_steps == 30

    world.expire_lease(job_id)
    second = world.claim(job_id, "w2")
    assert second == first + 1
    stale = WriteBehindSteps(DbMetricSink(world.sessions, job_id, first))
    stale.log_step({**step, "step": 20})  # returns: the write happens behind
    with pytest.raises(StaleLease):
        stale.flush()
    with pytest.raises(StaleLease):
        stale.log_step({**step, "step": 25})
    stale.close()
    with world.sessions() as session:
        assert [r.step for r in list_steps(session=session, job_id=job_id)] == [5, 10, 15]
    assert not [e for e in world.events(job_id) if e.kind == "step" and e.payload["step"] > 15]


def test_job_cancelled_while_queued_never_starts(world: World) -> None:
    job_id = world.submit()
    with world.sessions() as session, session.begin():
        job = session.get(Job, job_id)
        assert job is not None
        request_cancel(session=session, job=job)

    assert train_job.run(job_id) is None

    job = world.job(job_id)
    assert job.status == JobStatus.CANCELLED and job.attempts == 0 and job.started_at is None
    with world.sessions() as session:
        assert [t.to_status for t in list_transitions(session=session, job_id=job_id)] == [
            "queued", "cancelled"]
    assert not (world.settings.worker.work_dir / job_id).exists()


def test_dataset_outside_tenant_prefix_fails_the_job(world: World) -> None:
    other = world.submit(tenant="other")
    other_train = world.job(other).spec["datasets"]["train"]["dataset_id"]
    job_id = world.submit(datasets={"train": {"uri": "s3://bucket/tenants/"
        f"{world.job(other).tenant_id}/datasets/{other_train}.jsonl"},
        "val": {"dataset_id": other_train}, "test": None})

    assert train_job.run(job_id) == "failed"

    job = world.job(job_id)
    message = job.outcome_message or ""
    assert job.status == JobStatus.FAILED and "pass a dataset_id" in message
    assert str(world.store.root) not in message


class SimulatedCrash(BaseException):
    """Like a killed worker process: not an Exception, so the task cannot record a failure."""


class CrashAfterFirstCheckpoint(DbMetricSink):
    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        super().event(kind, payload)
        if kind == "checkpoint" and payload["name"] == "last" and payload["epoch"] == 1:
            raise SimulatedCrash


def test_redelivery_resumes_from_last_checkpoint(world: World,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = world.submit()
    monkeypatch.setattr(tasks, "DbMetricSink", CrashAfterFirstCheckpoint)
    with pytest.raises(SimulatedCrash):
        train_job.run(job_id)
    job = world.job(job_id)
    assert job.status == JobStatus.RUNNING and job.current_epoch == 1 and job.lease_owner
    # The broker redelivers to another machine: no local scratch, and the lease must lapse.
    shutil.rmtree(world.settings.worker.work_dir / job_id)
    monkeypatch.setattr(tasks, "DbMetricSink", DbMetricSink)
    assert train_job.run(job_id) is None  # the dead worker's lease is still live: deferred
    assert [job for job, countdown in world.sent if countdown] == [job_id]

    world.expire_lease(job_id)
    assert train_job.run(job_id) == "completed"

    job = world.job(job_id)
    assert job.attempts == 2 and job.fencing_token == 2 and job.current_epoch == 2
    events = world.events(job_id)
    assert epoch_events(events) == [1, 2]  # epoch 1 was not trained again
    with world.sessions() as session:
        reasons = [t.reason for t in list_transitions(session=session, job_id=job_id)]
        assert [e.epoch for e in list_epochs(session=session, job_id=job_id)] == [1, 2]
    assert any(r.startswith("lease expired; reclaimed by") for r in reasons)
    assert [e.payload["status"] for e in events if e.kind == "status"] == [
        "queued", "running", "running", "completed"]


def test_events_are_committed_then_announced_on_redis(world: World) -> None:
    import json

    import redis

    from worker.sinks import RedisEventPublisher, events_channel

    job_id = world.submit()
    token = world.claim(job_id, "w1")
    assert token is not None
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    pubsub = client.pubsub()
    pubsub.subscribe(events_channel(job_id))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    publisher = RedisEventPublisher("redis://127.0.0.1:6379/0")
    try:
        DbMetricSink(world.sessions, job_id, token, publisher).event(
            "warning", {"epoch": 1, "message": "few vulnerable predictions"})
        message = pubsub.get_message(timeout=5)
        assert message is not None and message["type"] == "message"
        announced = json.loads(message["data"])["id"]
        # the announced row is already readable from another session (committed first)
        assert [e.id for e in world.events(job_id) if e.kind == "warning"] == [announced]
    finally:
        pubsub.close()
        publisher.close()
        client.close()


def test_status_changes_of_the_worker_are_announced_on_redis(world: World) -> None:
    """The `running` status of a claim and the terminal one of `finish` are announced like the
    sink's events, so an SSE stream ends as soon as the job does (not at its next poll)."""
    import json

    import redis

    from worker.sinks import RedisEventPublisher, events_channel

    job_id = world.submit()
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    pubsub = client.pubsub()
    pubsub.subscribe(events_channel(job_id))
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    publisher = RedisEventPublisher("redis://127.0.0.1:6379/0")
    try:
        claim = runtime.claim(world.sessions, job_id=job_id, owner="w1", lease_s=30,
                              max_attempts=3)
        assert claim is not None
        publisher.publish(job_id, claim.event_id)  # as train_job does once it holds the job
        runtime.finish(world.sessions, job_id=job_id, token=claim.token,
                       status=JobStatus.COMPLETED, message="done", run_time_s=1.0,
                       publisher=publisher)
        announced = []
        for _ in range(2):
            message = pubsub.get_message(timeout=5)
            assert message is not None and message["type"] == "message"
            announced.append(json.loads(message["data"])["id"])
        status_events = [(e.id, e.payload["status"]) for e in world.events(job_id)
                         if e.kind == "status"]
        assert [(i, s) for i, s in status_events if s != "queued"] == [
            (announced[0], "running"), (announced[1], "completed")]
    finally:
        pubsub.close()
        publisher.close()
        client.close()


def _best_weights(world: World, job_id: str) -> dict[str, Any]:
    from safetensors.torch import load_file

    job = world.job(job_id)
    with world.sessions() as session:
        (best,) = [c for c in list_checkpoints(session=session, job_id=job_id) if c.name == "best"]
    path = world.store.local_path(f"{best.key_prefix}/model.safetensors")
    assert job.tenant_id in best.key_prefix
    return load_file(str(path))


def test_a_job_model_starts_from_the_tenants_own_finished_job(world: World) -> None:
    """`model: job:<id>` fine-tunes the tenant's earlier run: with a 1e-9 learning rate the new
    job's weights stay those of the source's best checkpoint. Another tenant naming the same
    job fails: the checkpoint is looked up under the claiming tenant's own area only."""
    import torch

    source = world.submit()
    assert train_job.run(source) == "completed"
    config = CONFIG | {"model": f"job:{source}/best", "lr": 1e-9, "epochs": 1}
    child = world.submit(config=config)
    assert train_job.run(child) in ("completed", "early_stopped"), world.job(child).outcome_message
    before, after = _best_weights(world, source), _best_weights(world, child)
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.allclose(tensor, after[name], atol=1e-6), name

    thief = world.submit(tenant="mallory", config=config)
    assert train_job.run(thief) == "failed"
    message = world.job(thief).outcome_message or ""
    assert "no 'best' checkpoint" in message and str(world.store.root) not in message


def _evaluation(step: int, epoch: int, predicted_vulnerable: int) -> dict[str, Any]:
    """A mid-epoch `evaluation` record as the loop writes it (10 validation rows, 7 vulnerable)."""
    from tests.integration.api_fixtures import epoch_record

    record = epoch_record(epoch, step=step, prediction_distribution={
        "predicted_vulnerable": predicted_vulnerable, "predicted_safe": 10 - predicted_vulnerable,
        "actual_vulnerable": 7, "actual_safe": 3})
    for key in ("train_loss", "lr", "train_samples_per_s", "epoch_time_s", "is_best"):
        record.pop(key)
    return record


def test_a_rollback_is_a_running_transition_and_an_event_and_replays_over_the_api(
        world: World) -> None:
    """DbMetricSink records a rollback as running -> running with its reason (fenced), and
    `streamguard guard replay --job` reads the evaluations back through the API."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from streamguard.cli_guard import load_remote, replay_lines
    from streamguard.db.tenants import create_tenant_key
    from tests.integration.api_fixtures import epoch_record

    job_id = world.submit()
    token = world.claim(job_id, "w1")
    assert token is not None
    sink = DbMetricSink(world.sessions, job_id, token)
    sink.event("evaluation", _evaluation(5, 1, 0))  # inside the grace: not separating yet
    sink.log_epoch(epoch_record(1, step=10))  # 6 of 7 vulnerable, 4 of 3 safe: separated
    sink.event("evaluation", _evaluation(15, 2, 10))  # no safe predictions: collapsed
    payload = {"epoch": 2, "step": 15, "to_epoch": 1, "to_step": 10, "lr_factor": 0.5,
               "rollback": 1, "max_rollbacks": 2,
               "reason": "no safe predictions on 3 safe validation examples; the model "
                         "predicts one class only (it had predicted both classes before)"}
    sink.event("rollback", payload)
    sink.event("evaluation", _evaluation(15, 2, 6))  # the same step again, at half the LR
    sink.log_epoch(epoch_record(2, step=20, is_best=False))

    assert world.job(job_id).status == JobStatus.RUNNING
    with world.sessions() as session:
        moves = [(t.from_status, t.to_status, t.reason)
                 for t in list_transitions(session=session, job_id=job_id)]
    assert moves[-1][:2] == ("running", "running")
    assert moves[-1][2].startswith("rollback 1 of 2 at step 15 (epoch 2): back to the best "
                                   "checkpoint (epoch 1, step 10), learning rate x0.5; no safe "
                                   "predictions"), moves[-1][2]
    events = world.events(job_id)
    at = [e.kind for e in events].index("rollback")
    assert events[at].payload == payload and events[at - 1].kind == "status"
    assert events[at - 1].payload["from"] == events[at - 1].payload["status"] == "running"

    # fenced like every other write: a worker that lost the lease records no rollback
    world.expire_lease(job_id)
    assert world.claim(job_id, "w2")
    with pytest.raises(StaleLease):
        sink.event("rollback", {**payload, "rollback": 2})
    assert [e.kind for e in world.events(job_id)].count("rollback") == 1

    # `guard replay --job` over the API: the evaluations in the order they ran
    with world.sessions() as session, session.begin():
        _, key = create_tenant_key(session=session, tenant_name="acme")
    with TestClient(create_app(world.settings),
                    headers={"Authorization": f"Bearer {key}"}) as client:
        run = load_remote(client, job_id)
    assert [(r["epoch"], r["step"]) for r in run.records] == \
        [(1, 5), (1, 10), (2, 15), (2, 15), (2, 20)]
    lines = replay_lines(run, {"guard_grace_steps": 8})
    assert lines[0].endswith("guard: warn 30%, stop 20%, patience 3, grace 8 step(s)")
    assert "not_separating_yet: no vulnerable predictions" in lines[1]
    assert "STOP collapsed: no safe predictions on 3" in lines[3]
    assert lines[4] == "      (the recorded run rolled back here)"
    assert "with these thresholds: collapsed at step 15 (epoch 2)" in lines
    later = replay_lines(run, {"guard_grace_steps": 16})  # a longer grace: the flip only warns
    assert "with these thresholds: no stop" in later
