"""No job is stranded: worker faults on real Celery worker processes, on every broker.

The repository functions of recovery (orphans, re-queueing, the attempt cap, preemption, cancel
of an orphan, running time, ETA) are checked first on PostgreSQL and SQLite; then real workers
(`celery ... worker --pool=solo`, as deployed) are killed, stopped and terminated mid-job:

- `kill -9` in the middle of epoch 2 of 3 on Redis, RabbitMQ and the filesystem broker of
  `streamguard up` (SQLite): a standby worker finishes the job within lease + sweep interval +
  the lost work, in 2 attempts, with the weights of an uninterrupted run (CPU, 1 torch thread).
  The recovery time (kill -> the job claimed again) is printed per broker;
- SIGTERM mid-epoch: the job is preempted at its step, re-queued, and resumes elsewhere there;
- SIGSTOP past the lease: the job moves; the stopped worker's writes are refused when it
  continues, and it abandons the attempt; the job completes once;
- a job that kills its worker every time: exactly `worker.max_attempts` attempts, then failed;
- `streamguard up` restarts its worker process when it dies.

Every fault test checks: one metrics row and one `epoch` event per epoch, the `last` pointer
only moves forward and names a checkpoint matching its manifest, the job ends terminal within
its deadline, and a write with a stale fencing token is refused.

The data is a toy (a dangerous call or its safe twin in a short C function), not
`streamguard.synth`: the synthetic flaws need ~150 optimizer steps at length 96 before a tiny
model predicts both classes (the collapse guard stops it otherwise), which makes an epoch too
slow for fault tests on 2 shared cores; here 50 steps of length 32 do.

Run: .venv/bin/pytest -m integration tests/integration/test_recovery.py -s   (prints timings)
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from celery import Celery
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from api.services.jobs import eta_seconds, progress
from streamguard.contract import (
    TRAIN_TASK,
    JobConfig,
    celery_config,
    checkpoint_pointer_key,
    job_prefix,
)
from streamguard.db import Job, JobEvent, JobStatus
from streamguard.db import jobs as jobs_repo
from streamguard.db.datasets import create_dataset
from streamguard.db.metrics import list_epochs, list_steps, upsert_step
from streamguard.db.migrate import upgrade
from streamguard.db.models import JobTransition, utcnow
from streamguard.db.session import make_engine, make_session_factory
from streamguard.db.tenants import get_or_create_tenant
from streamguard.errors import JobStateConflict
from streamguard.manifest import fetch_dir, read_pointer
from streamguard.settings import (
    BrokerSettings,
    DbSettings,
    Settings,
    StorageSettings,
    WorkerSettings,
)
from streamguard.storage import LocalArtifactStore, sha256_file
from tests.e2e.harness import Proc, base_env, child_pids, dump_logs, free_port, worker_cmd
from tests.integration import db_fixtures
from tests.integration.db_fixtures import fresh_pg_database

pytestmark = pytest.mark.integration

# the repository tests run on both backends (PostgreSQL and SQLite)
pg_url = db_fixtures.pg_url
sqlite_url = db_fixtures.sqlite_url
db_url = db_fixtures.db_url
engine = db_fixtures.engine
session = db_fixtures.session

T = TypeVar("T")

LEASE_S, HEARTBEAT_S, SWEEP_S, MAX_ATTEMPTS = 5, 1, 1, 3
#: A worker frozen inside a write transaction loses its session (and the job row's lock) after
#: this long, so the sweeper can hand the job on.
IDLE_TX_S = 4
#: 400 rows / batch 8 = 50 optimizer steps per epoch (about 3 s here).
CONFIG: dict[str, Any] = {"model": "tiny", "max_seq_len": 32, "tokenizer_vocab_size": 300,
                          "batch_size": 8, "lr": 2e-3, "epochs": 3,
                          "early_stopping_patience": 0}
SIZES = {"train": 400, "val": 100, "test": 100}
BROKERS = {"redis": "redis://127.0.0.1:6379/10",
           "rabbitmq": "amqp://guest:guest@127.0.0.1:5672//",
           "filesystem": None}  # `streamguard up`'s: folders under the data dir, with SQLite
RECOVERY: dict[str, float] = {}  # broker -> seconds from kill -9 to the job claimed again


# --- data and the uninterrupted reference run --------------------------------------------------

def toy_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Balanced C-like functions: a dangerous call (vulnerable) or its safe twin, plus filler."""
    rng = random.Random(seed)
    unsafe = ["strcpy(buf, src);", "gets(line);", "sprintf(out, fmt);", "strcat(buf, src);"]
    safe = ["strlcpy(buf, src, sizeof buf);", "fgets(line, 64, stdin);",
            'snprintf(out, 32, "%s", fmt);', "strlcat(buf, src, sizeof buf);"]
    filler = ["x++;", "y = x + 1;", "if (n) return 0;", "z = f(y);", "n--;", "free(p);"]
    rows = []
    for i in range(n):
        target = i % 2
        call = rng.choice(unsafe if target else safe)
        body = " ".join(rng.choice(filler) for _ in range(rng.randint(2, 8)))
        rows.append({"id": f"toy-{seed}-{i}", "target": target,
                     "func": f"int fn_{rng.randint(0, 999)}(char *src) {{ {call} {body} }}"})
    return rows


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("toy")
    for seed, (split, n) in enumerate(SIZES.items()):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in toy_rows(n, seed)), encoding="utf-8")
    return {split: folder / f"{split}.jsonl" for split in SIZES}


def load_weights(model_file: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return dict(load_file(str(model_file)))


@pytest.fixture(scope="module")
def reference(splits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
              ) -> dict[str, Any]:
    """The final weights of an uninterrupted run of CONFIG (this process, 1 torch thread, as
    the workers run with OMP_NUM_THREADS=1)."""
    import torch

    from streamguard.contract import JobConfig
    from streamguard.training import run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        work = tmp_path_factory.mktemp("reference")
        result = run(JobConfig.model_validate(CONFIG), train_path=splits["train"],
                     val_path=splits["val"], test_path=splits["test"], work_dir=work)
    finally:
        torch.set_num_threads(threads)
    assert result.outcome == "completed", result.message
    return load_weights(work / "checkpoints" / "last" / "model.safetensors")


# --- a cluster: database, broker, store, workers -----------------------------------------------

class Cluster:
    """One deployment: a database, a broker (its own queue), a file store and worker processes,
    with the small lease/heartbeat/sweep settings of these tests."""

    def __init__(self, tmp: Path, *, db_url: str, broker_url: str | None) -> None:
        self.tmp, self.queue = tmp, f"recovery-{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            env="dev", data_dir=tmp / "data", db=DbSettings(url=db_url),
            broker=BrokerSettings(url=broker_url),
            storage=StorageSettings(uri=(tmp / "store").as_uri()),
            worker=WorkerSettings(lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S,
                                  sweep_interval_s=SWEEP_S, max_attempts=MAX_ATTEMPTS,
                                  queue=self.queue, work_dir=tmp / "work"))
        self.settings.ensure_dirs()
        self.env = base_env()
        self.env.update({
            "SG_ENV": "dev", "SG_DATA_DIR": str(tmp / "data"), "SG_DB__URL": db_url,
            "SG_STORAGE__URI": self.settings.storage.uri, "SG_WORKER__QUEUE": self.queue,
            "SG_WORKER__WORK_DIR": str(tmp / "work"), "SG_WORKER__LEASE_S": str(LEASE_S),
            "SG_WORKER__HEARTBEAT_S": str(HEARTBEAT_S),
            "SG_WORKER__SWEEP_INTERVAL_S": str(SWEEP_S),
            "SG_WORKER__IDLE_IN_TRANSACTION_TIMEOUT_S": str(IDLE_TX_S),
            "SG_WORKER__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            **({"SG_BROKER__URL": broker_url} if broker_url else {})})
        self.engine = make_engine(db_url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        self.store = LocalArtifactStore(tmp / "store")
        self.producer = Celery("recovery-tests")
        self.producer.conf.update(**celery_config(self.settings))
        self.workers: list[Proc] = []

    # processes
    def start_workers(self, n: int, *, wait: bool = True) -> list[Proc]:
        """Start n workers at once; return them (with `wait`, once each says it is ready)."""
        new = []
        for _ in range(n):
            i = len(self.workers) + 1
            node = f"w{i}-{uuid.uuid4().hex[:6]}@%h"
            proc = Proc(f"worker{i}", worker_cmd(self.queue, node), self.env,
                        self.tmp / "logs" / f"worker{i}.log")
            self.workers.append(proc)
            new.append(proc)
        for proc in new if wait else []:
            proc.wait_for_output(lambda line: line.rstrip().endswith("ready."), 120)
        return new

    def worker_by_pid(self, pid: int) -> Proc:
        (proc,) = [p for p in self.workers if p.pid == pid]
        return proc

    def owner(self, job_id: str) -> Proc:
        """The worker process holding the job's lease (`host:pid` in lease_owner)."""
        owner = self.job(job_id).lease_owner
        assert owner, f"job {job_id} has no lease owner"
        return self.worker_by_pid(int(owner.rsplit(":", 1)[1]))

    def close(self) -> None:
        for proc in self.workers:  # all at once: each warm shutdown takes a few seconds
            if proc.alive():
                os.kill(proc.pid, signal.SIGCONT)  # a stopped worker cannot shut down
                os.kill(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            proc.stop(grace_s=15)
        try:
            with self.producer.connection_for_write() as conn:
                conn.default_channel.queue_delete(self.queue)
        except Exception:  # noqa: BLE001, S110 - best effort (the filesystem one is in tmp)
            pass
        self.engine.dispose()

    # jobs
    def submit(self, config: dict[str, Any] | None = None, *, send: bool = True) -> str:
        """A tenant with the toy datasets and a queued job (committed), then its task sent."""
        with self.sessions() as session, session.begin():
            tenant_id = get_or_create_tenant(session=session, name="recovery").id
            refs = {}
            for split in SIZES:
                path = self.tmp.parent / "toy" / f"{split}.jsonl"
                ds = create_dataset(session=session, tenant_id=tenant_id, name=split,
                                    storage_key="pending", size_bytes=path.stat().st_size,
                                    sha256=sha256_file(path))
                ds.storage_key = f"tenants/{tenant_id}/datasets/{ds.id}.jsonl"
                self.store.put_file(path, ds.storage_key)
                refs[split] = {"dataset_id": ds.id}
            cfg = config or CONFIG
            spec = {"name": "recovery", "datasets": refs, "config": cfg, "max_runtime_s": None}
            job_id = jobs_repo.create_job(session=session, tenant_id=tenant_id, spec=spec,
                                          total_epochs=cfg["epochs"]).id
        if send:
            self.producer.send_task(TRAIN_TASK, args=[job_id], queue=self.queue)
        return job_id

    def job(self, job_id: str) -> Job:
        with self.sessions() as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def events(self, job_id: str, kind: str | None = None) -> list[JobEvent]:
        with self.sessions() as session:
            query = sa.select(JobEvent).where(JobEvent.job_id == job_id)
            if kind:
                query = query.where(JobEvent.kind == kind)
            return list(session.scalars(query.order_by(JobEvent.id)))

    def transitions(self, job_id: str) -> list[JobTransition]:
        with self.sessions() as session:
            return jobs_repo.list_transitions(session=session, job_id=job_id)

    def wait(self, what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
        """Poll `probe` until it returns a value; fail with the workers' logs after timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = probe()
            if value is not None and value is not False:
                return value
            time.sleep(0.1)
        raise AssertionError(f"waited {timeout_s:.0f} s for {what}")

    def wait_terminal(self, job_id: str, timeout_s: float) -> Job:
        return self.wait(f"job {job_id} to finish",
                         lambda: (j := self.job(job_id)).is_terminal and j, timeout_s)

    def wait_mid_epoch(self, job_id: str, epoch: int) -> float:
        """Wait for epoch `epoch - 1`'s `last` checkpoint, then a third of an epoch; returns
        the epoch time measured (seconds)."""
        def published() -> dict[str, Any] | None:
            for e in self.events(job_id, "checkpoint"):
                if e.payload["name"] == "last" and e.payload["epoch"] == epoch - 1 \
                        and "step" not in e.payload:
                    return dict(e.payload)
            return None

        payload = self.wait(f"epoch {epoch - 1} of job {job_id} to be published", published, 120)
        epoch_s = float(payload["metrics"]["epoch_time_s"])
        # a third in: well inside the epoch even when the load on the machine changes
        time.sleep(epoch_s / 3)
        return epoch_s


@pytest.fixture(scope="module")
def pg_db_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        upgrade(url)
        yield url


@pytest.fixture
def cluster_factory(tmp_path: Path, splits: dict[str, Path], pg_db_url: str,
                    request: pytest.FixtureRequest) -> Iterator[Callable[..., Cluster]]:
    """`make(broker)`: a Cluster on that broker (PostgreSQL; SQLite for the filesystem one)."""
    made: list[Cluster] = []
    (tmp_path / "toy").mkdir()
    for split, path in splits.items():
        (tmp_path / "toy" / f"{split}.jsonl").write_bytes(path.read_bytes())

    def make(broker: str) -> Cluster:
        root = tmp_path / broker
        db_url = (f"sqlite:///{root}/data/streamguard.db" if BROKERS[broker] is None
                  else pg_db_url)
        if BROKERS[broker] is None:
            upgrade(db_url)
        cluster = Cluster(root, db_url=db_url, broker_url=BROKERS[broker])
        made.append(cluster)
        return cluster

    failed_before = request.session.testsfailed
    yield make
    for cluster in made:
        if request.session.testsfailed > failed_before:
            dump_logs(cluster.workers)
        cluster.close()


# --- the invariants every fault test checks ----------------------------------------------------

def check_invariants(cluster: Cluster, job_id: str, *, epochs: int) -> None:
    """One metrics row and one epoch event for each of the first `epochs` epochs; `last` only
    moves forward (optimizer steps) and names a checkpoint that matches its manifest; a stale
    fencing token is refused."""
    from streamguard.db.jobs import StaleLease
    from worker.sinks import DbMetricSink

    job = cluster.job(job_id)
    with cluster.sessions() as session:
        assert [m.epoch for m in list_epochs(session=session, job_id=job_id)] == \
            list(range(1, epochs + 1))
    # An epoch that an attempt recorded but could not checkpoint before losing the job is run
    # again by the next attempt, and that event says `replayed`: each epoch once otherwise.
    epoch_events = [(e.payload["epoch"], e.payload.get("replayed", False))
                    for e in cluster.events(job_id, "epoch")]
    assert [n for n, replayed in epoch_events if not replayed] == list(range(1, epochs + 1))
    assert [n for n, _ in epoch_events] == sorted(n for n, _ in epoch_events), epoch_events
    # a mid-epoch (preempted) `last` carries its step; an epoch's, the step in its metrics
    steps = [e.payload.get("step") or e.payload["metrics"]["step"]
             for e in cluster.events(job_id, "checkpoint") if e.payload["name"] == "last"]
    assert steps == sorted(steps) and len(set(steps)) == len(steps), steps
    pointer = read_pointer(cluster.store, checkpoint_pointer_key(job.tenant_id, job_id, "last"))
    if epochs == 0:
        assert pointer is None, pointer
    else:
        check_pointer(cluster, job_id, pointer, epochs)
    for token in range(job.fencing_token + 1):  # the job is finished: no token writes now
        with pytest.raises(StaleLease):
            DbMetricSink(cluster.sessions, job_id, token).log_epoch({"epoch": 1, "f1": 0.0})
    assert len(cluster.events(job_id, "epoch")) == len(epoch_events)
    if job.status == JobStatus.COMPLETED:
        check_steps(cluster, job_id, epochs)


def check_steps(cluster: Cluster, job_id: str, epochs: int) -> None:
    """One step row for each logged step index of the whole run, none lost or repeated, whatever
    the workers went through; each index has one first-time event, and a later attempt's events
    for an index recorded before say `replayed`."""
    job = cluster.job(job_id)
    assert job.total_steps and job.total_steps % epochs == 0, job.total_steps
    per_epoch = job.total_steps // epochs
    every = JobConfig.model_validate(job.spec["config"]).step_interval(per_epoch)
    expected = [k for k in range(1, job.total_steps + 1) if k % every == 0 or k % per_epoch == 0]
    with cluster.sessions() as session:
        rows = list_steps(session=session, job_id=job_id, limit=10_000)
    assert [r.step for r in rows] == expected
    assert [r.epoch for r in rows] == [-(-k // per_epoch) for k in expected]
    events = [e.payload for e in cluster.events(job_id, "step")]
    assert sorted(e["step"] for e in events if not e.get("replayed")) == expected
    replayed = [e["step"] for e in events if e.get("replayed")]
    assert set(replayed) <= set(expected), replayed


def check_pointer(cluster: Cluster, job_id: str, pointer: dict[str, Any] | None,
                  epochs: int) -> None:
    job = cluster.job(job_id)
    assert pointer is not None and pointer["epoch"] == epochs and "step" not in pointer
    assert pointer["key_prefix"].startswith(job_prefix(job.tenant_id, job_id))
    fetch_dir(cluster.store, pointer["key_prefix"], cluster.tmp / f"check-{job_id}")  # sha256s
    archive = cluster.store.local_path(pointer["archive_key"])
    assert sha256_file(archive) == pointer["sha256"]


def final_weights(cluster: Cluster, job_id: str) -> dict[str, Any]:
    job = cluster.job(job_id)
    pointer = read_pointer(cluster.store, checkpoint_pointer_key(job.tenant_id, job_id, "last"))
    assert pointer is not None
    return load_weights(cluster.tmp / f"check-{job_id}" / "model.safetensors")


def assert_same_weights(got: dict[str, Any], want: dict[str, Any]) -> None:
    import torch

    assert got.keys() == want.keys()
    different = [k for k in want if not torch.equal(got[k], want[k])]
    assert not different, f"weights differ from the uninterrupted run: {different[:5]}"


def claimed_at(cluster: Cluster, job_id: str, attempt: int) -> Any:
    (row,) = [t for t in cluster.transitions(job_id)
              if t.to_status == "running" and t.reason.endswith(f"(attempt {attempt})")]
    return row.created_at


# --- the repository functions (PostgreSQL and SQLite) ------------------------------------------

def _running_job(session: Session, *, owner: str = "w1", lease_s: int = 60,
                 now: Any = None) -> tuple[Job, int]:
    tenant = get_or_create_tenant(session=session, name="acme")
    job = jobs_repo.create_job(session=session, tenant_id=tenant.id, spec={}, total_epochs=3)
    token = jobs_repo.claim_job(session=session, job_id=job.id, worker_id=owner,
                                lease_s=lease_s, now=now)
    assert token is not None
    session.refresh(job)
    return job, token


def test_an_orphan_is_requeued_once_then_failed_at_max_attempts(session: Session) -> None:
    now = utcnow()
    job, token = _running_job(session, now=now)
    sent: list[str] = []
    assert jobs_repo.find_orphans(session=session, now=now) == []
    assert jobs_repo.requeue_orphan(session=session, job_id=job.id, enqueue=sent.append,
                                    max_attempts=3, now=now) is None  # the lease is live
    later = now + timedelta(seconds=61)
    assert job.id in jobs_repo.find_orphans(session=session, now=later)
    for attempt in (1, 2):
        assert jobs_repo.requeue_orphan(session=session, job_id=job.id, enqueue=sent.append,
                                        max_attempts=3, now=later) == JobStatus.QUEUED
        # a second sweeper finds nothing to do
        assert jobs_repo.requeue_orphan(session=session, job_id=job.id, enqueue=sent.append,
                                        max_attempts=3, now=later) is None
        session.refresh(job)
        assert (job.status, job.lease_owner, job.attempts) == ("queued", None, attempt)
        assert sent == [job.id] * attempt
        new = jobs_repo.claim_job(session=session, job_id=job.id, worker_id=f"w{attempt + 1}",
                                  lease_s=60, now=later)
        assert new == token + attempt
        later += timedelta(seconds=61)
    assert jobs_repo.requeue_orphan(session=session, job_id=job.id, enqueue=sent.append,
                                    max_attempts=3, now=later) == JobStatus.FAILED
    session.refresh(job)
    assert job.status == "failed" and job.attempts == 3 and len(sent) == 2
    assert "failed after 3 attempt(s)" in (job.outcome_message or "")
    assert "worker.max_attempts = 3" in (job.outcome_message or "")
    steps = [(t.from_status, t.to_status) for t in
             jobs_repo.list_transitions(session=session, job_id=job.id)]
    assert steps == [(None, "queued"), ("queued", "running"), ("running", "queued"),
                     ("queued", "running"), ("running", "queued"), ("queued", "running"),
                     ("running", "failed")]


def test_a_redelivery_reclaims_an_orphan_until_the_attempts_are_used(session: Session) -> None:
    now = utcnow()
    job, _ = _running_job(session, now=now)
    for attempt in (2, 3):
        now += timedelta(seconds=61)
        assert jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w", lease_s=60,
                                   max_attempts=3, now=now) is not None
        session.refresh(job)
        assert job.attempts == attempt
    now += timedelta(seconds=61)  # the third worker lost too: no fourth attempt
    assert jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w", lease_s=60,
                               max_attempts=3, now=now) is None
    session.refresh(job)
    assert job.status == "failed" and job.attempts == 3


def test_preempted_attempts_do_not_count_against_the_cap(session: Session) -> None:
    from streamguard.db.jobs import StaleLease

    job, token = _running_job(session)
    sent: list[str] = []
    with pytest.raises(StaleLease):
        jobs_repo.release_job(session=session, job_id=job.id, token=token + 1,
                              enqueue=sent.append)
    for _ in range(3):  # three docker stops in a row
        jobs_repo.release_job(session=session, job_id=job.id, token=token, enqueue=sent.append,
                              run_time_s=10.0)
        session.refresh(job)
        assert job.status == "queued" and job.lease_owner is None
        token = jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w", lease_s=60,
                                    max_attempts=3)
        assert token is not None
    assert sent == [job.id] * 3 and jobs_repo.lost_attempts(session=session, job_id=job.id) == 0
    session.refresh(job)
    assert job.attempts == 4 and job.run_time_s == pytest.approx(30.0)
    reasons = [t.reason for t in jobs_repo.list_transitions(session=session, job_id=job.id)]
    assert reasons.count(jobs_repo.PREEMPTED) == 3


def test_a_broker_refusal_leaves_the_orphan_for_the_next_sweep(engine: Engine) -> None:
    factory = make_session_factory(engine)
    now = utcnow()
    with factory() as db, db.begin():
        job, _ = _running_job(db, owner="w1", lease_s=1, now=now - timedelta(seconds=5))

    def refuse(_job_id: str) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError), factory() as db, db.begin():
        jobs_repo.requeue_orphan(session=db, job_id=job.id, enqueue=refuse, max_attempts=3)
    with factory() as db:
        assert db.get(Job, job.id).status == "running"  # type: ignore[union-attr]
        assert job.id in jobs_repo.find_orphans(session=db)
    sent: list[str] = []
    with factory() as db, db.begin():
        assert jobs_repo.requeue_orphan(session=db, job_id=job.id, enqueue=sent.append,
                                        max_attempts=3) == JobStatus.QUEUED
    assert sent == [job.id]


def test_concurrent_sweepers_requeue_an_orphan_once(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with factory() as db, db.begin():
        job, _ = _running_job(db, lease_s=1, now=utcnow() - timedelta(seconds=5))
    sent: list[str] = []
    results: list[JobStatus | None] = []
    barrier = threading.Barrier(4)

    def sweep() -> None:
        barrier.wait()
        with factory() as db, db.begin():
            results.append(jobs_repo.requeue_orphan(session=db, job_id=job.id,
                                                    enqueue=sent.append, max_attempts=3))

    threads = [threading.Thread(target=sweep) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(JobStatus.QUEUED) == 1 and results.count(None) == 3, results
    assert sent == [job.id]


def test_cancel_of_an_orphan_ends_it_at_once(session: Session) -> None:
    now = utcnow()
    live, token = _running_job(session, now=now)
    jobs_repo.request_cancel(session=session, job=live, now=now)
    assert live.status == "running" and live.cancel_requested  # its worker will stop
    orphan, _ = _running_job(session, now=now - timedelta(seconds=120))
    jobs_repo.request_cancel(session=session, job=orphan, now=now)
    assert orphan.status == "cancelled" and orphan.lease_owner is None
    assert "no worker was running it" in (orphan.outcome_message or "")
    with pytest.raises(JobStateConflict):
        jobs_repo.request_cancel(session=session, job=orphan)
    # a cancel that raced a worker's death is settled by the sweeper: cancelled, not re-queued
    later = now + timedelta(seconds=61)
    assert jobs_repo.requeue_orphan(session=session, job_id=live.id, enqueue=lambda _: None,
                                    max_attempts=3, now=later) == JobStatus.CANCELLED
    del token


def test_running_time_and_eta_count_only_a_live_worker(session: Session) -> None:
    now = utcnow()
    job, token = _running_job(session, now=now)
    for i in range(1, 4):
        beat = jobs_repo.heartbeat(session=session, job_id=job.id, token=token, lease_s=60,
                                   run_time_s=10.0, now=now + timedelta(seconds=10 * i))
        assert beat.ok
    jobs_repo.record_progress(session=session, job_id=job.id, token=token, current_epoch=1)
    session.refresh(job)
    assert job.run_time_s == pytest.approx(30.0)
    # 30 s of running time for 1 epoch of 3: 60 s left (plus nothing since the last beat)
    assert eta_seconds(job, now + timedelta(seconds=30)) == pytest.approx(60.0)
    assert eta_seconds(job, now + timedelta(seconds=95)) is None  # lease expired: nobody runs it
    # once step metrics arrive, the rate per optimizer step decides: 30 s for 50 of 120 steps
    upsert_step(session=session, job_id=job.id, token=token, step=50, epoch=2, record={},
                total_steps=120)
    session.refresh(job)
    assert eta_seconds(job, now + timedelta(seconds=30)) == pytest.approx(42.0)
    assert progress(job).model_dump() == {"epoch": 1, "epochs": 3, "step": 50,
                                          "total_steps": 120, "percent": 41.7}
    jobs_repo.finish_job(session=session, job_id=job.id, token=token, status="timed_out",
                         message="limit", run_time_s=2.5)
    session.refresh(job)
    assert job.status == "timed_out" and job.run_time_s == pytest.approx(32.5)
    assert eta_seconds(job, now) is None


def test_a_delivery_that_cannot_reach_the_database_is_not_lost() -> None:
    """A claim that fails on the database (refused here) sends the task again for later
    instead of letting Celery ack a failed task and strand the queued job."""
    from worker import runtime

    refused = make_session_factory(make_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/x"))
    sent: list[tuple[str, float | None]] = []

    def enqueue(job_id: str, countdown: float | None = None) -> None:
        sent.append((job_id, countdown))

    assert runtime.claim_or_defer(refused, job_id="a" * 32, owner="w", lease_s=5,
                                  max_attempts=3, enqueue=enqueue, retry_s=7) is None
    assert sent == [("a" * 32, 7)]


def test_the_runtime_limit_counts_running_time_and_ends_timed_out(
        cluster_factory: Callable[..., Cluster], monkeypatch: pytest.MonkeyPatch) -> None:
    """The task body in this process: a job that waited two days but ran 58 s of its 60 s
    limit trains about 2 s more, then ends `timed_out` (not `cancelled`)."""
    import torch

    from streamguard.settings import get_settings
    from worker.tasks import train_job

    cluster = cluster_factory("redis")
    for name, value in cluster.env.items():
        if name.startswith("SG_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    job_id = cluster.submit({**CONFIG, "epochs": 50}, send=False)
    with cluster.sessions() as db, db.begin():
        db.execute(sa.update(Job).where(Job.id == job_id).values(
            run_time_s=58.0, started_at=utcnow() - timedelta(days=2)))
        job = db.get(Job, job_id)
        assert job is not None
        job.spec = {**job.spec, "max_runtime_s": 60}
    try:
        assert train_job.run(job_id) == "timed_out"
    finally:
        torch.set_num_threads(threads)
        get_settings.cache_clear()
    job = cluster.job(job_id)
    assert job.status == "timed_out" and job.attempts == 1
    assert "of running time" in (job.outcome_message or "") and "60 s" in (job.outcome_message
                                                                            or "")
    assert 60.0 <= job.run_time_s < 120.0, job.run_time_s
    assert len(cluster.events(job_id, "epoch")) < 50


# --- real workers --------------------------------------------------------------------------------

@pytest.mark.parametrize("broker", list(BROKERS))
def test_kill_9_mid_epoch_a_standby_worker_finishes_the_job(
        broker: str, cluster_factory: Callable[..., Cluster],
        reference: dict[str, Any]) -> None:
    cluster = cluster_factory(broker)
    cluster.start_workers(2)
    job_id = cluster.submit()
    epoch_s = cluster.wait_mid_epoch(job_id, 2)
    victim = cluster.owner(job_id)
    killed_at = utcnow()
    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait(10)

    # lease expiry + a sweep (or, on RabbitMQ, the redelivery, deferred to the lease's end)
    cluster.wait("the job claimed again", lambda: cluster.job(job_id).attempts == 2,
                 LEASE_S + SWEEP_S + 15)
    recovery_s = (claimed_at(cluster, job_id, 2) - killed_at).total_seconds()
    RECOVERY[broker] = recovery_s
    # the fault costs the rest of the lease, a sweep and the lost part of epoch 2 (redone from
    # epoch 1's checkpoint): at most lease + sweep + one epoch on top of what was left to do
    # (2/3 of epoch 2 and epoch 3), plus the new attempt's setup and the test split
    deadline_s = LEASE_S + SWEEP_S + epoch_s + 2 * epoch_s + 20
    job = cluster.wait_terminal(job_id, deadline_s)
    finished_s = (job.finished_at - killed_at).total_seconds()  # type: ignore[operator]
    print(f"\n[recovery] {broker}: kill -9 -> job claimed again in {recovery_s:.1f} s "  # noqa: T201
          f"(lease {LEASE_S} s, sweep {SWEEP_S} s); finished {finished_s:.1f} s after the "
          f"kill (epoch {epoch_s:.1f} s)")
    assert job.status == "completed", job.outcome_message
    assert job.attempts == 2
    assert recovery_s <= LEASE_S + SWEEP_S + 2.5, recovery_s  # + polling and claim latency
    check_invariants(cluster, job_id, epochs=3)
    assert_same_weights(final_weights(cluster, job_id), reference)


def test_sigterm_preempts_at_the_step_and_the_job_resumes_there_elsewhere(
        cluster_factory: Callable[..., Cluster], reference: dict[str, Any]) -> None:
    cluster = cluster_factory("redis")
    cluster.start_workers(2)
    job_id = cluster.submit()
    epoch_s = cluster.wait_mid_epoch(job_id, 2)
    victim = cluster.owner(job_id)
    (standby,) = [p for p in cluster.workers if p is not victim]
    signalled = time.monotonic()
    os.kill(victim.pid, signal.SIGTERM)  # what `docker stop` sends; then 10 s, then SIGKILL
    victim.proc.wait(10)
    exit_s = time.monotonic() - signalled

    (preempted,) = [e.payload for e in cluster.events(job_id, "checkpoint") if "step" in e.payload]
    assert preempted["name"] == "last" and preempted["epoch"] == 2, preempted
    step = preempted["step"]
    assert 50 < step < 100, preempted  # inside epoch 2 (50 optimizer steps per epoch)
    line = standby.wait_for_output("resuming epoch 2 at batch", LEASE_S + 30)
    assert line.rstrip().endswith(f"(optimizer step {step})"), line
    job = cluster.wait_terminal(job_id, 2 * epoch_s + 60)
    print(f"\n[preempt] SIGTERM -> worker exited in {exit_s:.1f} s; resumed at optimizer "  # noqa: T201
          f"step {step}")
    assert job.status == "completed" and job.attempts == 2, job.outcome_message
    moves = [(t.from_status, t.to_status, t.reason) for t in cluster.transitions(job_id)]
    assert ("running", "queued", jobs_repo.PREEMPTED) in moves, moves
    with cluster.sessions() as session:
        assert jobs_repo.lost_attempts(session=session, job_id=job_id) == 0
    assert "preempted" in victim.text()
    check_invariants(cluster, job_id, epochs=3)
    assert_same_weights(final_weights(cluster, job_id), reference)


def test_a_stopped_worker_past_its_lease_loses_the_job_and_its_writes(
        cluster_factory: Callable[..., Cluster], reference: dict[str, Any]) -> None:
    cluster = cluster_factory("redis")
    cluster.start_workers(2)
    job_id = cluster.submit()
    epoch_s = cluster.wait_mid_epoch(job_id, 2)
    victim = cluster.owner(job_id)
    # right after a heartbeat committed; with step metrics the worker writes every few steps,
    # so it may well be frozen inside a write transaction holding the job row's lock: the
    # server ends that session after worker.idle_in_transaction_timeout_s (CI found the sweeper
    # waiting on that lock for as long as the worker stayed frozen)
    beat = cluster.job(job_id).heartbeat_at
    cluster.wait("a heartbeat", lambda: cluster.job(job_id).heartbeat_at != beat, 10)
    os.kill(victim.pid, signal.SIGSTOP)  # a GC pause, a frozen VM, a debugger
    try:
        cluster.wait("the standby to take the job", lambda: cluster.job(job_id).attempts == 2,
                     max(LEASE_S, IDLE_TX_S) + SWEEP_S + 15)
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    victim.wait_for_output("abandoning this attempt", 30)  # its next write was refused
    assert victim.alive()  # it stays a worker, ready for other jobs
    job = cluster.wait_terminal(job_id, 2 * epoch_s + 60)
    assert job.status == "completed" and job.attempts == 2, job.outcome_message
    refused = victim.text()
    assert "lease lost (token 1)" in refused or "lease token 1 is stale" in refused
    ends = [t for t in cluster.transitions(job_id) if t.to_status in {s.value for s in JobStatus}
            - {"queued", "running"}]
    assert [t.to_status for t in ends] == ["completed"]  # completed once
    check_invariants(cluster, job_id, epochs=3)
    assert_same_weights(final_weights(cluster, job_id), reference)


def test_a_worker_frozen_inside_a_transaction_releases_the_job_row(
        pg_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's connections end a transaction left idle for
    worker.idle_in_transaction_timeout_s: a frozen worker cannot keep the job row locked."""
    from streamguard.settings import get_settings
    from worker import runtime

    monkeypatch.setenv("SG_WORKER__IDLE_IN_TRANSACTION_TIMEOUT_S", "1")
    get_settings.cache_clear()
    runtime.session_factory.cache_clear()
    try:
        frozen = runtime.session_factory(pg_db_url)()
        with frozen.begin():
            tenant_id = get_or_create_tenant(session=frozen, name="frozen").id
            job = jobs_repo.create_job(session=frozen, tenant_id=tenant_id,
                                       spec={"config": CONFIG}, total_epochs=1)
        frozen.begin()
        frozen.execute(sa.select(Job.id).where(Job.id == job.id).with_for_update())
        time.sleep(2.5)  # frozen while holding the row lock, past the timeout
        other = make_session_factory(make_engine(pg_db_url))()
        with other.begin():  # NOWAIT: the lock must be gone, not merely waited for
            assert other.execute(sa.select(Job.id).where(Job.id == job.id)
                                 .with_for_update(nowait=True)).scalar_one() == job.id
        with pytest.raises(sa.exc.DBAPIError, match="idle-in-transaction"):  # ended by the server
            frozen.execute(sa.select(Job.id).where(Job.id == job.id))
        frozen.close()
        other.close()
    finally:
        get_settings.cache_clear()
        runtime.session_factory.cache_clear()


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(
        cluster_factory: Callable[..., Cluster]) -> None:
    cluster = cluster_factory("redis")
    cluster.start_workers(2)
    job_id = cluster.submit()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        cluster.wait(f"attempt {attempt} to start",
                     lambda a=attempt: (j := cluster.job(job_id)).attempts == a  # type: ignore[misc]
                     and j.status == "running", LEASE_S + SWEEP_S + 30)
        victim = cluster.owner(job_id)
        os.kill(victim.pid, signal.SIGKILL)  # as an out-of-memory kill would
        victim.proc.wait(10)
        if attempt < MAX_ATTEMPTS:
            cluster.start_workers(1, wait=False)  # a restarted container
    job = cluster.wait_terminal(job_id, LEASE_S + SWEEP_S + 15)
    assert job.status == "failed" and job.attempts == MAX_ATTEMPTS, job.outcome_message
    assert f"failed after {MAX_ATTEMPTS} attempt(s)" in (job.outcome_message or "")
    assert f"worker.max_attempts = {MAX_ATTEMPTS}" in (job.outcome_message or "")
    moves = [(t.from_status, t.to_status) for t in cluster.transitions(job_id)]
    assert moves.count(("queued", "running")) == MAX_ATTEMPTS, moves
    assert moves[-1] == ("running", "failed")
    epochs = len(cluster.events(job_id, "epoch"))
    check_invariants(cluster, job_id, epochs=epochs)


def test_streamguard_up_restarts_its_worker_when_it_dies(tmp_path: Path) -> None:
    from tests.e2e.harness import VENV_BIN

    data_dir, port = tmp_path / "sg", free_port()
    up = Proc("streamguard-up", [str(VENV_BIN / "streamguard"), "up", "--no-demo",
                                 "--port", str(port), "--data-dir", str(data_dir)],
              base_env(), tmp_path / "up.log", capture_stdout=True)
    worker_log = data_dir / "logs" / "worker.log"

    def workers() -> list[int]:
        return [pid for pid in child_pids(up.pid)
                if "celery" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]

    def ready_count() -> int:
        text = worker_log.read_text(errors="replace") if worker_log.exists() else ""
        return sum(line.rstrip().endswith("ready.") for line in text.splitlines())

    try:
        up.wait_for_output("serving; Ctrl-C to stop", 180)
        (first,) = cluster_wait("the worker", lambda: len(workers()) == 1 and workers(), 30)
        cluster_wait("the worker to be ready", lambda: ready_count() == 1, 60)
        os.kill(first, signal.SIGKILL)
        up.wait_for_output("worker  exited with code -9; restarting it", 15)
        (second,) = cluster_wait("a new worker", lambda: (w := workers()) and first not in w
                                 and w, 15)
        cluster_wait("the new worker to be ready", lambda: ready_count() == 2, 60)
        assert up.alive() and second != first
    except BaseException:
        dump_logs([up])
        raise
    finally:
        up.stop()


def cluster_wait(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value is not None and value is not False:
            return value
        time.sleep(0.2)
    raise AssertionError(f"waited {timeout_s:.0f} s for {what}")


def test_recovery_times_were_measured() -> None:
    """Printed last: kill -9 -> job claimed again, per broker (quoted in the closing note)."""
    if RECOVERY:
        print("\n[recovery] " + ", ".join(f"{b} {s:.1f} s" for b, s in RECOVERY.items())  # noqa: T201
              + f" (lease {LEASE_S} s + sweep {SWEEP_S} s)")
