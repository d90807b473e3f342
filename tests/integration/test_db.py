"""Migrations and repositories against real PostgreSQL and SQLite (each test runs on both).

    .venv/bin/pytest tests/integration/test_db.py -m integration
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from streamguard.db import jobs as jobs_repo
from streamguard.db import metrics as metrics_repo
from streamguard.db.datasets import (
    DatasetNotFound,
    create_dataset,
    get_dataset,
    get_dataset_or_raise,
    list_datasets,
)
from streamguard.db.jobs import DuplicateIdempotencyKey, InvalidCursor, StaleLease
from streamguard.db.migrate import downgrade, upgrade
from streamguard.db.models import ApiKey, Base, EpochMetric, Job, JobStatus, Tenant, utcnow
from streamguard.db.session import make_engine, make_session_factory
from streamguard.db.tenants import (
    authenticate,
    create_tenant_key,
    get_or_create_tenant,
    revoke_key,
)
from streamguard.errors import JobNotFound, JobStateConflict
from tests.integration import db_fixtures

# Fixtures are found by name in the module namespace (tests/integration/conftest.py is not ours).
pg_url = db_fixtures.pg_url
sqlite_url = db_fixtures.sqlite_url
db_url = db_fixtures.db_url
empty_db_url = db_fixtures.empty_db_url
engine = db_fixtures.engine
session = db_fixtures.session

pytestmark = pytest.mark.integration

TABLES = {"tenants", "api_keys", "datasets", "jobs", "job_transitions", "epoch_metrics",
          "step_metrics", "job_events", "checkpoints"}


def _tables(url: str) -> set[str]:
    eng = make_engine(url)
    try:
        return set(sa.inspect(eng).get_table_names()) - {"alembic_version"}
    finally:
        eng.dispose()


def _tenant(session: Session, name: str = "acme") -> Tenant:
    return get_or_create_tenant(session=session, name=name)


def _job(session: Session, tenant: Tenant, **kwargs: object) -> Job:
    return jobs_repo.create_job(session=session, tenant_id=tenant.id,
                                spec={"train": {"epochs": 3}}, total_epochs=3, **kwargs)


# --- migrations ------------------------------------------------------------------------------

def test_migrations_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    assert _tables(empty_db_url) == set()
    upgrade(empty_db_url)
    assert _tables(empty_db_url) == TABLES
    downgrade(empty_db_url, "base")
    assert _tables(empty_db_url) == set()
    upgrade(empty_db_url, "head")
    assert _tables(empty_db_url) == TABLES


def test_models_match_migrations(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


# --- tenants and keys ------------------------------------------------------------------------

def test_api_key_authenticates_and_only_its_hash_is_stored(session: Session) -> None:
    tenant, key = create_tenant_key(session=session, tenant_name="acme")
    again, key2 = create_tenant_key(session=session, tenant_name="acme")
    assert again.id == tenant.id and key != key2 and key.startswith("sg_")

    stored = session.scalars(sa.select(ApiKey).where(ApiKey.tenant_id == tenant.id)).all()
    assert len(stored) == 2
    assert all(key not in (row.key_hash, row.prefix) and len(row.key_hash) == 64
               for row in stored)

    assert authenticate(session=session, key=key).id == tenant.id  # type: ignore[union-attr]
    assert authenticate(session=session, key=key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert authenticate(session=session, key="sg_nonsense") is None
    assert revoke_key(session=session, key=key) is True
    assert authenticate(session=session, key=key) is None
    assert authenticate(session=session, key=key2) is not None


def test_datasets_are_scoped_by_tenant(session: Session) -> None:
    acme, other = _tenant(session, "acme"), _tenant(session, "other")
    ds = create_dataset(session=session, tenant_id=acme.id, name="devign", storage_key="ds/1",
                        size_bytes=10, sha256="0" * 64, stats={"rows": 3})
    session.commit()
    assert get_dataset(session=session, tenant_id=acme.id, dataset_id=ds.id) is ds
    assert get_dataset(session=session, tenant_id=other.id, dataset_id=ds.id) is None
    with pytest.raises(DatasetNotFound):
        get_dataset_or_raise(session=session, tenant_id=other.id, dataset_id=ds.id)
    assert list_datasets(session=session, tenant_id=other.id, limit=10) == ([], None)
    page, cursor = list_datasets(session=session, tenant_id=acme.id, limit=10)
    assert [d.id for d in page] == [ds.id] and cursor is None


# --- jobs ------------------------------------------------------------------------------------

def test_idempotency_key_is_unique_per_tenant(session: Session) -> None:
    acme, other = _tenant(session, "acme"), _tenant(session, "other")
    first = _job(session, acme, idempotency_key="k1", request_hash="h")
    with pytest.raises(DuplicateIdempotencyKey) as info:
        _job(session, acme, idempotency_key="k1", request_hash="h")
    assert info.value.job_id == first.id
    # The savepoint kept the transaction usable; other tenants and keys are unaffected.
    assert _job(session, other, idempotency_key="k1").id != first.id
    assert _job(session, acme, idempotency_key=None).id != first.id
    session.commit()
    found = jobs_repo.get_job_by_idempotency_key(session=session, tenant_id=acme.id,
                                                 idempotency_key="k1")
    assert found is not None and found.id == first.id


def test_get_job_scoping_and_raise(session: Session) -> None:
    acme, other = _tenant(session, "acme"), _tenant(session, "other")
    job = _job(session, acme)
    assert jobs_repo.get_job(session=session, job_id=job.id, tenant_id=acme.id) is job
    assert jobs_repo.get_job(session=session, job_id=job.id, tenant_id=other.id) is None
    with pytest.raises(JobNotFound):
        jobs_repo.get_job_or_raise(session=session, job_id="missing")


def test_list_jobs_pages_newest_first_with_cursor(session: Session) -> None:
    acme = _tenant(session)
    made = [_job(session, acme) for _ in range(5)]
    same = utcnow()
    for job in made[1:4]:  # ties on created_at are broken by id
        job.created_at = same
    session.flush()
    expected = [j.id for j in sorted(made, key=lambda j: (j.created_at, j.id), reverse=True)]

    seen: list[str] = []
    cursor: str | None = None
    for size in (2, 2, 1):
        page, cursor = jobs_repo.list_jobs(session=session, tenant_id=acme.id, limit=2,
                                           cursor=cursor)
        assert len(page) == size
        seen += [j.id for j in page]
    assert cursor is None and seen == expected

    jobs_repo.transition(session=session, job=made[0], to_status="running", reason="test")
    running, _ = jobs_repo.list_jobs(session=session, tenant_id=acme.id, limit=10,
                                     status=JobStatus.RUNNING)
    assert [j.id for j in running] == [made[0].id]
    with pytest.raises(InvalidCursor):
        jobs_repo.list_jobs(session=session, tenant_id=acme.id, limit=2, cursor="garbage!")


def test_column_statements_see_what_the_session_has_not_flushed(session: Session) -> None:
    """The summaries, counts and the tenant lock run on the session's connection without the
    ORM layer (`execute_columns`); they still autoflush first, as `session.execute` does."""
    acme = _tenant(session)
    made = [_job(session, acme) for _ in range(3)]
    made[0].name = "renamed, not flushed"
    pending = Job(id=uuid.uuid4().hex, tenant_id=acme.id, spec={"config": {
        "selection_metric": "roc_auc"}}, total_epochs=2, status=JobStatus.QUEUED.value)
    session.add(pending)  # neither change is flushed yet

    rows, cursor = jobs_repo.list_job_summaries(db=session, tenant_id=acme.id, limit=10)
    jobs, _ = jobs_repo.list_jobs(session=session, tenant_id=acme.id, limit=10)
    assert cursor is None and [r.id for r in rows] == [j.id for j in jobs]
    assert {r.id: r.name for r in rows}[made[0].id] == "renamed, not flushed"
    assert {r.id: r.selection_metric for r in rows}[pending.id] == "roc_auc"
    assert jobs_repo.count_jobs_by_status(session=session, tenant_id=acme.id) == {"queued": 4}
    assert jobs_repo.lock_tenant_row(session=session, tenant_id=acme.id) is None


def test_json_columns_come_back_as_written_whatever_the_characters(session: Session) -> None:
    """JSON columns are read through the engines' own reader (`load_json`, PostgreSQL sends
    bytes): text outside ASCII, escapes and nesting come back unchanged, on both backends."""
    acme = _tenant(session)
    warnings = ["validation overlap: 12 % — naïve dedup 🐛", 'quote " and \\ backslash', ""]
    spec = {"config": {"selection_metric": "f1", "nested": [{"ü": None}, 1.5, True]}}
    job = jobs_repo.create_job(session=session, tenant_id=acme.id, spec=spec, total_epochs=1)
    job.warnings = warnings
    session.commit()
    session.expire_all()
    again = jobs_repo.get_job_or_raise(session=session, job_id=job.id)
    assert again.warnings == warnings and again.spec == spec
    rows, _ = jobs_repo.list_job_summaries(db=session, tenant_id=acme.id, limit=5)
    assert rows[0].warnings == warnings


def test_transition_state_machine(session: Session) -> None:
    job = _job(session, _tenant(session))
    with pytest.raises(JobStateConflict, match="allowed: cancelled, failed, running"):
        jobs_repo.transition(session=session, job=job, to_status="completed", reason="x")
    jobs_repo.transition(session=session, job=job, to_status="running", reason="started")
    assert job.started_at is not None
    jobs_repo.transition(session=session, job=job, to_status="collapsed", reason="no positives")
    assert job.status == "collapsed" and job.outcome_message == "no positives"
    assert job.finished_at is not None
    with pytest.raises(JobStateConflict, match="none: the job is finished"):
        jobs_repo.transition(session=session, job=job, to_status="running", reason="again")

    steps = [(t.from_status, t.to_status)
             for t in jobs_repo.list_transitions(session=session, job_id=job.id)]
    assert steps == [(None, "queued"), ("queued", "running"), ("running", "collapsed")]
    events = metrics_repo.list_events_after(session=session, job_id=job.id)
    assert [e.payload["status"] for e in events] == ["queued", "running", "collapsed"]


def test_request_cancel(session: Session) -> None:
    acme = _tenant(session)
    queued = jobs_repo.request_cancel(session=session, job=_job(session, acme))
    assert queued.status == "cancelled"
    running = _job(session, acme)
    token = jobs_repo.claim_job(session=session, job_id=running.id, worker_id="w", lease_s=60)
    assert token is not None
    jobs_repo.request_cancel(session=session, job=running)
    assert running.status == "running" and running.cancel_requested
    beat = jobs_repo.heartbeat(session=session, job_id=running.id, token=token, lease_s=60)
    assert beat.ok and beat.cancel_requested
    with pytest.raises(JobStateConflict, match="only queued or running"):
        jobs_repo.request_cancel(session=session, job=queued)


def test_claim_heartbeat_and_fencing(session: Session) -> None:
    job = _job(session, _tenant(session))
    now = utcnow()
    t1 = jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w1", lease_s=60, now=now)
    assert t1 == 1
    assert jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w2", lease_s=60,
                               now=now + timedelta(seconds=30)) is None
    assert jobs_repo.heartbeat(session=session, job_id=job.id, token=t1, lease_s=60,
                               now=now + timedelta(seconds=30)).ok
    metrics_repo.upsert_epoch(session=session, job_id=job.id, token=t1, epoch=1,
                              record={"f1": 0.5})

    # w1 stalls past its (extended) lease: w2 takes over with a new token.
    later = now + timedelta(seconds=91)
    t2 = jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w2", lease_s=60,
                             now=later)
    assert t2 == 2
    session.refresh(job)
    assert (job.status, job.lease_owner, job.attempts) == ("running", "w2", 2)
    assert not jobs_repo.heartbeat(session=session, job_id=job.id, token=t1, lease_s=60).ok
    with pytest.raises(StaleLease):
        metrics_repo.upsert_epoch(session=session, job_id=job.id, token=t1, epoch=2,
                                  record={"f1": 0.6})
    with pytest.raises(StaleLease):
        jobs_repo.finish_job(session=session, job_id=job.id, token=t1, status="completed",
                             message="done")

    jobs_repo.record_progress(session=session, job_id=job.id, token=t2, current_epoch=2,
                              best_epoch=1, best_metric=0.5)
    jobs_repo.finish_job(session=session, job_id=job.id, token=t2, status="completed",
                         message="done", test_metrics={"f1": 0.55})
    session.refresh(job)
    assert (job.status, job.current_epoch, job.best_epoch, job.lease_owner) == \
        ("completed", 2, 1, None)
    assert job.test_metrics == {"f1": 0.55}
    assert jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w3", lease_s=60,
                               now=later + timedelta(days=1)) is None
    with pytest.raises(StaleLease):  # same token, but the job is finished
        metrics_repo.upsert_epoch(session=session, job_id=job.id, token=t2, epoch=3, record={})
    reasons = [t.reason for t in jobs_repo.list_transitions(session=session, job_id=job.id)]
    assert reasons == ["submitted", "claimed by a worker (attempt 1)",
                       "lease expired; reclaimed by another worker (attempt 2)", "done"]


def test_cancel_requested_job_cannot_be_claimed(session: Session) -> None:
    job = _job(session, _tenant(session))
    job.cancel_requested = True
    session.flush()
    assert jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w", lease_s=60) is None


# --- metrics, events, checkpoints ------------------------------------------------------------

def test_upsert_epoch_twice_keeps_one_row_with_second_value(session: Session) -> None:
    job = _job(session, _tenant(session))
    token = jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w", lease_s=60)
    assert token is not None
    for f1 in (0.1, 0.7):
        metrics_repo.upsert_epoch(session=session, job_id=job.id, token=token, epoch=1,
                                  record={"f1": f1, "confusion": [[1, 2], [3, 4]]})
    metrics_repo.upsert_epoch(session=session, job_id=job.id, token=token, epoch=2,
                              record={"f1": 0.8})
    rows = metrics_repo.list_epochs(session=session, job_id=job.id)
    assert [(r.epoch, r.record["f1"]) for r in rows] == [(1, 0.7), (2, 0.8)]
    assert rows[0].record["confusion"] == [[1, 2], [3, 4]]
    assert session.scalar(sa.select(sa.func.count()).select_from(EpochMetric)
                          .where(EpochMetric.job_id == job.id)) == 2
    assert [r.epoch for r in metrics_repo.list_epochs(session=session, job_id=job.id,
                                                      offset=1, limit=5)] == [2]


def test_events_are_ordered_by_id_after_a_given_id(session: Session) -> None:
    acme = _tenant(session)
    job, other = _job(session, acme), _job(session, acme)
    made = [metrics_repo.add_event(session=session, job_id=job.id, kind="epoch",
                                   payload={"epoch": i}) for i in range(4)]
    metrics_repo.add_event(session=session, job_id=other.id, kind="warning", payload={})
    ids = [e.id for e in made]
    assert ids == sorted(ids)
    after = metrics_repo.list_events_after(session=session, job_id=job.id, after_id=ids[1])
    assert [e.payload["epoch"] for e in after] == [2, 3]
    assert metrics_repo.list_events_after(session=session, job_id=job.id, after_id=ids[0],
                                          limit=1)[0].id == ids[1]
    with pytest.raises(ValueError):
        metrics_repo.add_event(session=session, job_id=job.id, kind="bogus", payload={})


def test_checkpoint_upsert_is_fenced_and_replaces(session: Session) -> None:
    job = _job(session, _tenant(session))
    token = jobs_repo.claim_job(session=session, job_id=job.id, worker_id="w", lease_s=60)
    assert token is not None
    for epoch in (1, 2):
        metrics_repo.upsert_checkpoint(
            session=session, job_id=job.id, token=token, name="last", epoch=epoch,
            key_prefix=f"jobs/{job.id}/step_{epoch:06d}", manifest={"files": []},
            size_bytes=100 * epoch, metrics={"f1": 0.1 * epoch})
    last = metrics_repo.get_checkpoint(session=session, job_id=job.id, name="last")
    assert last is not None and (last.epoch, last.size_bytes) == (2, 200)
    assert [c.name for c in metrics_repo.list_checkpoints(session=session, job_id=job.id)] == \
        ["last"]
    assert metrics_repo.get_checkpoint(session=session, job_id=job.id, name="best") is None
    with pytest.raises(StaleLease):
        metrics_repo.upsert_checkpoint(
            session=session, job_id=job.id, token=token + 1, name="best", epoch=1,
            key_prefix="x", manifest={}, size_bytes=0, metrics={})


def test_concurrent_claims_have_one_winner(engine: Engine) -> None:
    """Two workers claim the same job in separate transactions: the second waits, then loses."""
    factory = make_session_factory(engine)
    tenant_name = f"race-{uuid.uuid4().hex[:8]}"
    with factory() as setup:
        job = _job(setup, _tenant(setup, tenant_name))
        setup.commit()
        job_id = job.id
    results: dict[str, int | None] = {}
    w1_claimed = threading.Event()

    def claim(worker: str, commit_after_s: float = 0.0) -> None:
        with factory() as db:
            results[worker] = jobs_repo.claim_job(session=db, job_id=job_id, worker_id=worker,
                                                  lease_s=60)
            w1_claimed.set()
            time.sleep(commit_after_s)  # hold the row lock while the other worker tries
            db.commit()

    first = threading.Thread(target=claim, args=("w1", 0.5))
    first.start()
    assert w1_claimed.wait(10)
    claim("w2")  # blocks on w1's row lock (PG) or write lock (SQLite) until w1 commits
    first.join()
    try:
        assert results == {"w1": 1, "w2": None}
    finally:
        with factory() as cleanup:
            cleanup.delete(_tenant(cleanup, tenant_name))  # cascades to the job and its rows
            cleanup.commit()


def test_timestamps_come_back_as_utc_on_both_backends(session: Session) -> None:
    """`UtcDateTime` returns aware UTC: SQLite's naive text re-tagged, PostgreSQL's values in the
    UTC session zone the engine sets, so their tzinfo is `datetime.UTC` itself (no per-value
    conversion), whatever zone the server runs in."""
    from datetime import UTC, datetime, timezone

    tenant = get_or_create_tenant(session=session, name="tz")
    eastern = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5)))
    job = jobs_repo.create_job(session=session, tenant_id=tenant.id, spec={}, total_epochs=1)
    job.created_at = eastern
    session.flush()
    session.expire(job)
    assert job.created_at.tzinfo is UTC
    assert job.created_at == eastern and job.created_at.hour == 8
    if session.get_bind().dialect.name == "postgresql":
        assert session.execute(sa.text("SHOW TimeZone")).scalar() == "UTC"
