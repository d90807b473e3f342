"""Streams that scale (issue 7): many concurrent SSE streams on ONE real uvicorn process.

A real API process (started like tests/e2e/harness.py does) on a fresh migrated PostgreSQL
database; an async httpx client on loopback holds the streams; the test writes a job's events
the way the worker does (commit the row, then publish `{"id": ...}` on `events_channel`). Every
stream must receive every event and end at the terminal status; `/healthz`, sampled from a
separate process while the streams run, must stay fast; once the streams are closed, the
server's open descriptors and its PostgreSQL connections must be back to where they started.

Figures are printed (run with `-s` to see them): streams, times, `/healthz` p50/p99, delivery
latency, descriptors and connections.

Also here, in-process (TestClient): a late commit with a smaller id is still sent; streams go on
by polling while Redis is refused, silent or hung (SIGSTOP of a redis-server of the test's own);
`/healthz` answers with the thread pool saturated; `/readyz` fails naming the store when the
store's root is not a folder, a write fails, or it is out of space.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from api.routes import health
from api.streams import READ_THREADS
from streamguard.contract import events_channel
from streamguard.db import jobs as jobs_repo
from streamguard.db import metrics as metrics_repo
from streamguard.db.migrate import upgrade
from streamguard.db.models import EventKind, JobStatus
from streamguard.db.session import make_engine, make_session_factory
from streamguard.db.tenants import create_tenant_key
from tests.e2e.harness import Proc, api_cmd, base_env, free_port, wait_ready
from tests.integration import api_fixtures
from tests.integration.api_fixtures import ApiHarness, epoch_record, parse_sse, warning_payload
from tests.integration.db_fixtures import PG_ADMIN_DSN, fresh_pg_database

# Fixtures from api_fixtures (integration/conftest.py is owned elsewhere).
api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions
api_fixture = api_fixtures.api_fixture  # the `api` fixture

pytestmark = pytest.mark.integration

REDIS_URL = api_fixtures.REDIS_URL
#: libpq reads PGAPPNAME: the API process's connections carry this name in pg_stat_activity.
SERVER_APP_NAME = "sg-streams-scale-api"
#: Pool of the API process (the settings' defaults, fixed here): 20 connections at most, for
#: 1,000 streams.
POOL_SIZE, MAX_OVERFLOW = 10, 10
#: Stream requests in flight at once while opening (the client stays bounded).
OPENING_CONCURRENCY = 64
HEALTHZ_P99_LIMIT_S = 0.100
#: Descriptors / connections allowed above the baseline once every stream closed.
FD_TOLERANCE, PG_TOLERANCE = 8, 2


# --- the server ---------------------------------------------------------------------------------

def raise_fd_limit(want: int = 8192) -> None:
    """Raise this process's soft descriptor limit (the API child inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


@dataclass
class Server:
    proc: Proc
    base_url: str
    db_name: str

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def pg_connections(self) -> int:
        """The API process's connections to its database (by application name)."""
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                               "application_name = %s", (self.db_name, SERVER_APP_NAME)).fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(scope="module")
def scale_db_url() -> Iterator[str]:
    with fresh_pg_database() as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="module")
def writer(scale_db_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions for writing like the worker (no pooled connection stays open)."""
    engine = make_engine(scale_db_url, poolclass=NullPool)
    yield make_session_factory(engine)
    engine.dispose()


def start_server(tmp: Path, db_url: str, redis_url: str | None) -> Server:
    raise_fd_limit()
    port = free_port()
    env = base_env() | {
        "SG_ENV": "dev", "SG_DATA_DIR": str(tmp / "data"), "SG_DB__URL": db_url,
        "SG_DB__POOL_SIZE": str(POOL_SIZE), "SG_DB__MAX_OVERFLOW": str(MAX_OVERFLOW),
        "SG_API__RATE_LIMIT_PER_MINUTE": "0",
        "PGAPPNAME": SERVER_APP_NAME,
    }
    if redis_url:
        env["SG_REDIS__URL"] = redis_url
    proc = Proc("api", [*api_cmd(port), "--no-access-log"], env, tmp / "api.log")
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, [proc], timeout_s=60)
    except BaseException:
        proc.stop()
        raise
    return Server(proc=proc, base_url=base_url, db_name=db_url.rsplit("/", 1)[1])


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[[str, str | None], Server]]:
    started: list[Server] = []

    def start(db_url: str, redis_url: str | None) -> Server:
        server = start_server(tmp_path, db_url, redis_url)
        started.append(server)
        return server

    yield start
    for server in started:
        server.proc.stop()


# --- the job, written like the worker writes it --------------------------------------------------

@dataclass
class JobWriter:
    factory: sessionmaker[Session]
    redis_url: str | None
    tenant_id: str = ""
    key: str = ""
    committed_at: dict[int, float] = field(default_factory=dict)  # event id -> monotonic

    def __post_init__(self) -> None:
        with self.factory() as session:
            tenant, self.key = create_tenant_key(
                session=session, tenant_name=f"scale-{uuid.uuid4().hex[:10]}")
            session.commit()
            self.tenant_id = tenant.id

    def new_job(self, epochs: int) -> str:
        with self.factory() as session:
            job = jobs_repo.create_job(session=session, tenant_id=self.tenant_id,
                                       spec={"test": "streams-scale"}, total_epochs=epochs)
            session.commit()
            return job.id

    def event_ids(self, job_id: str) -> list[int]:
        with self.factory() as session:
            return [e.id for e in metrics_repo.list_events_after(session=session, job_id=job_id,
                                                                 after_id=0, limit=10_000)]

    def claim(self, job_id: str) -> int:
        with self.factory() as session:
            token = jobs_repo.claim_job(session=session, job_id=job_id, worker_id="scale-w1",
                                        lease_s=600)
            session.commit()
        assert token is not None
        return token

    def run(self, job_id: str, token: int, epochs: int, interval_s: float) -> None:
        """Epoch events (a warning after the first), then `completed`: commit, then publish."""
        self.committed_at.clear()
        publisher = None
        if self.redis_url:
            import redis

            publisher = redis.Redis.from_url(self.redis_url, socket_timeout=2,
                                             socket_connect_timeout=2)

        def publish(event_id: int) -> None:
            self.committed_at[event_id] = time.monotonic()
            if publisher is not None:
                publisher.publish(events_channel(job_id), json.dumps({"id": event_id}))

        try:
            for epoch in range(1, epochs + 1):
                time.sleep(interval_s)
                with self.factory() as session:
                    event = metrics_repo.add_event(session=session, job_id=job_id,
                                                   kind=EventKind.EPOCH,
                                                   payload=epoch_record(epoch))
                    warning = None
                    if epoch == 1:
                        warning = metrics_repo.add_event(
                            session=session, job_id=job_id, kind=EventKind.WARNING,
                            payload=warning_payload(1, "vulnerable under 30%"))
                    session.commit()
                publish(event.id)
                if warning is not None:
                    publish(warning.id)
            time.sleep(interval_s)
            before = max(self.committed_at)
            with self.factory() as session:
                jobs_repo.finish_job(session=session, job_id=job_id, token=token,
                                     status=JobStatus.COMPLETED, message=f"completed {epochs}")
                session.commit()
            for event_id in self.event_ids(job_id):
                if event_id > before:
                    publish(event_id)
        finally:
            if publisher is not None:
                publisher.close()


# --- the client ---------------------------------------------------------------------------------

@dataclass
class StreamResult:
    ids: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    received_at: dict[int, float] = field(default_factory=dict)
    terminal: str | None = None
    pings: int = 0


async def follow(client: httpx.AsyncClient, url: str, opening: asyncio.Semaphore,
                 opened: asyncio.Event, counter: list[int], total: int,
                 result: StreamResult) -> None:
    """One stream: open it (bounded), then read messages until the terminal status."""
    await opening.acquire()
    released = False
    try:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200, await response.aread()
            event_id: str | None = None
            kind = data = None
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    result.pings += 1
                elif line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif not line and event_id is not None:
                    assert kind is not None and data is not None
                    result.ids.append(int(event_id))
                    result.kinds.append(kind)
                    result.received_at[int(event_id)] = time.monotonic()
                    if not released and kind == "status" and len(result.ids) >= 2:
                        released = True  # replayed `queued` and `running`: open and caught up
                        opening.release()
                        counter[0] += 1
                        if counter[0] == total:
                            opened.set()
                    status = json.loads(data).get("status") if kind == "status" else None
                    if status in ("completed", "failed", "cancelled", "timed_out"):
                        result.terminal = status
                        break
                    event_id = kind = data = None
    finally:
        if not released:
            opening.release()


HEALTHZ_SAMPLER = r"""
import json, os, sys, time
import httpx
url, out, stop = sys.argv[1:4]
samples = []
with httpx.Client(timeout=10.0) as client:
    while not os.path.exists(stop):
        started = time.monotonic()
        response = client.get(url)
        samples.append([started, time.monotonic() - started, response.status_code])
        time.sleep(0.01)
with open(out, "w") as fh:
    json.dump(samples, fh)
"""


class HealthzSampler:
    """`/healthz` timed from its own process (the stream client's event loop must not skew it)."""

    def __init__(self, base_url: str, tmp: Path) -> None:
        self.out, self.stop_file = tmp / "healthz.json", tmp / "healthz.stop"
        self.proc = Proc("healthz", [sys.executable, "-c", HEALTHZ_SAMPLER,
                                     f"{base_url}/healthz", str(self.out), str(self.stop_file)],
                         base_env(), tmp / "healthz.log")

    def finish(self) -> list[tuple[float, float, int]]:
        self.stop_file.touch()
        self.proc.proc.wait(timeout=30)
        self.proc.stop()
        assert self.out.exists(), self.proc.tail()
        return [tuple(s) for s in json.loads(self.out.read_text())]  # type: ignore[misc]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


async def run_streams(server: Server, writer: JobWriter, job_id: str, n: int, epochs: int,
                      interval_s: float, tmp: Path) -> dict[str, Any]:
    """Open n streams on the job, write its events, read them all; returns the figures."""
    url = f"/v1/jobs/{job_id}/events"
    results = [StreamResult() for _ in range(n)]
    opening, opened, counter = asyncio.Semaphore(OPENING_CONCURRENCY), asyncio.Event(), [0]
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(30.0, read=60.0)
    sampler = HealthzSampler(server.base_url, tmp)
    figures: dict[str, Any] = {"streams": n}
    token = writer.claim(job_id)  # a running job: `queued` and `running` are replayed
    async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=timeout,
                                 headers={"Authorization": f"Bearer {writer.key}"}) as client:
        started = time.monotonic()
        tasks = [asyncio.create_task(follow(client, url, opening, opened, counter, n, r))
                 for r in results]
        waiter = asyncio.create_task(opened.wait())
        done, _ = await asyncio.wait([waiter, *tasks], timeout=60,
                                     return_when=asyncio.FIRST_COMPLETED)
        while waiter not in done:  # a stream that failed while opening fails the test here
            for task in done:
                task.result()
                tasks.remove(task)
            assert time.monotonic() - started < 60, f"only {counter[0]} of {n} streams opened"
            done, _ = await asyncio.wait([waiter, *tasks], timeout=60,
                                         return_when=asyncio.FIRST_COMPLETED)
        figures["open_s"] = time.monotonic() - started
        figures["fds_open"] = server.fds()
        figures["pg_open"] = await asyncio.to_thread(server.pg_connections)
        phase_start = time.monotonic()
        await asyncio.to_thread(writer.run, job_id, token, epochs, interval_s)
        gathered = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        phase_end = time.monotonic()
        figures["pg_after_events"] = await asyncio.to_thread(server.pg_connections)
    errors = [r for r in gathered if isinstance(r, BaseException)]
    assert not errors, f"{len(errors)} streams failed, e.g. {errors[0]!r}"
    samples = sampler.finish()
    figures["stream_phase_s"] = phase_end - phase_start
    figures["total_s"] = phase_end - started

    expected = writer.event_ids(job_id)
    for i, result in enumerate(results):
        assert result.ids == expected, f"stream {i}: {result.ids} != {expected}"
        assert result.terminal == "completed", (i, result.kinds)
    assert results[0].kinds == ["status", "status", "epoch", "warning"] + \
        ["epoch"] * (epochs - 1) + ["status"], results[0].kinds

    lags = [max(r.received_at[i] for r in results) - writer.committed_at[i]
            for i in writer.committed_at]
    figures["delivery_last_stream_s"] = {"median": statistics.median(lags), "max": max(lags),
                                         "each": [round(lag, 2) for lag in lags]}
    in_phase = [s[1] for s in samples if phase_start <= s[0] <= phase_end]
    opening_phase = [s[1] for s in samples if s[0] < phase_start]
    assert all(s[2] == 200 for s in samples), [s for s in samples if s[2] != 200][:5]
    assert in_phase, "no /healthz sample in the stream phase"
    figures["healthz_stream_phase"] = {"n": len(in_phase), "p50_ms": 1000 * percentile(
        in_phase, 0.50), "p99_ms": 1000 * percentile(in_phase, 0.99),
        "max_ms": 1000 * max(in_phase)}
    figures["healthz_slow_in_phase"] = [  # (seconds into the phase, latency ms) over 50 ms
        (round(s[0] - phase_start, 2), round(1000 * s[1])) for s in samples
        if phase_start <= s[0] <= phase_end and s[1] > 0.05]
    figures["events_at"] = sorted(round(t - phase_start, 2) for t in writer.committed_at.values())
    if opening_phase:
        figures["healthz_opening_phase"] = {
            "n": len(opening_phase), "p50_ms": 1000 * percentile(opening_phase, 0.50),
            "p99_ms": 1000 * percentile(opening_phase, 0.99)}
    return figures


def check_scale(server: Server, writer: JobWriter, n: int, epochs: int, interval_s: float,
                tmp: Path, label: str) -> dict[str, Any]:
    # Warm up (the pool grows to its steady size, lazily imported modules load), then measure
    # the baseline the server must come back to.
    warm = writer.new_job(epochs=1)
    asyncio.run(run_streams(server, writer, warm, 40, 1, 0.05, tmp / "warmup"))
    time.sleep(1.0)
    baseline = {"fds": server.fds(), "pg": server.pg_connections()}

    job_id = writer.new_job(epochs=epochs)
    figures = asyncio.run(run_streams(server, writer, job_id, n, epochs, interval_s, tmp))
    figures["label"] = label
    figures["baseline"] = baseline
    back = wait_until(lambda: server.fds() <= baseline["fds"] + FD_TOLERANCE
                      and server.pg_connections() <= baseline["pg"] + PG_TOLERANCE, 20)
    figures["after"] = {"fds": server.fds(), "pg": server.pg_connections()}
    print(f"\n[streams-scale] {json.dumps(figures, indent=1, default=str)}")  # noqa: T201
    server.proc.check_alive()

    assert figures["healthz_stream_phase"]["n"] >= 50, figures
    # No stream holds a connection: with every stream open, the server has no more connections
    # than the streams' read threads and the hub's poller can use at once.
    assert figures["pg_open"] <= READ_THREADS + 1 + PG_TOLERANCE, figures
    assert figures["healthz_stream_phase"]["p99_ms"] < 1000 * HEALTHZ_P99_LIMIT_S, figures
    assert back, f"descriptors or connections not back to baseline: {figures}"
    return figures


@pytest.mark.timeout(180)
def test_a_thousand_streams_on_one_process_with_redis(
        scale_db_url: str, writer: sessionmaker[Session],
        server_factory: Callable[[str, str | None], Server], tmp_path: Path) -> None:
    server = server_factory(scale_db_url, REDIS_URL)
    jobs = JobWriter(writer, REDIS_URL)
    figures = check_scale(server, jobs, n=1000, epochs=8, interval_s=0.8, tmp=tmp_path,
                          label="redis, 1000 streams")
    assert figures["fds_open"] >= figures["baseline"]["fds"] + 1000  # really 1000 sockets
    # Notifications wake the hub at once (polling alone would take up to 2 s with Redis up).
    assert figures["delivery_last_stream_s"]["median"] < 1.0, figures


@pytest.mark.timeout(120)
def test_streams_without_redis_poll_the_database(
        scale_db_url: str, writer: sessionmaker[Session],
        server_factory: Callable[[str, str | None], Server], tmp_path: Path) -> None:
    server = server_factory(scale_db_url, None)
    jobs = JobWriter(writer, None)
    figures = check_scale(server, jobs, n=200, epochs=5, interval_s=0.3, tmp=tmp_path,
                          label="database polling, 200 streams")
    assert figures["delivery_last_stream_s"]["max"] < 3.0, figures


# --- /readyz: the store ------------------------------------------------------------------------

def _ready_error(api: ApiHarness) -> dict[str, Any]:
    response = api.client.get("/readyz")
    assert response.status_code == 503, response.text
    error: dict[str, Any] = response.json()["error"]
    for leak in (str(api.settings.data_dir), "artifacts", "readyz/"):
        assert leak not in response.text, leak
    return error


def test_readyz_names_the_store_when_its_root_is_a_file(api: ApiHarness) -> None:
    root = api.client.app.state.store.root  # type: ignore[attr-defined]
    root.rename(root.with_name("moved"))
    root.write_text("not a folder")
    error = _ready_error(api)
    details = {d["field"]: d["message"] for d in error["details"]}
    assert "store" in error["message"] and details["store"] == "failed: store: unreachable"
    assert details["database"] == "ok: database: ok" and details["broker"] == "ok: broker: ok"


def test_readyz_names_the_store_when_a_write_fails(api: ApiHarness) -> None:
    """A folder that cannot take the probe object (running as root, chmod would not stop
    writes: the probe's folder is a file instead)."""
    root = api.client.app.state.store.root  # type: ignore[attr-defined]
    (root / "readyz").write_text("in the way")
    error = _ready_error(api)
    assert error["message"] == "not ready: store not writable"
    details = {d["field"]: d["message"] for d in error["details"]}
    assert details["store"] == "failed: store: not writable"
    (root / "readyz").unlink()
    ready = api.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert list((root / "readyz").iterdir()) == []  # the probe object was deleted


def test_readyz_names_the_store_when_it_is_full(api: ApiHarness,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(health.shutil, "disk_usage",
                        lambda _path: usage(10 * 2**30, 10 * 2**30 - 2**20, 2**20))
    error = _ready_error(api)
    assert error["message"] == "not ready: store out of space"
    # A small disk with little space left, but above 1 % of it, is not full.
    monkeypatch.setattr(health.shutil, "disk_usage",
                        lambda _path: usage(2**30, 2**30 - 50 * 2**20, 50 * 2**20))
    assert api.client.get("/readyz").status_code == 200


def test_healthz_answers_while_the_thread_pool_is_saturated(api: ApiHarness) -> None:
    """`/healthz` runs on the event loop: it answers while every worker thread is busy."""
    import anyio.to_thread

    portal = api.client.portal  # type: ignore[attr-defined]
    limiter = portal.call(anyio.to_thread.current_default_thread_limiter)
    release = threading.Event()
    busy = [threading.Thread(target=lambda: portal.call(
        anyio.to_thread.run_sync, release.wait)) for _ in range(int(limiter.total_tokens))]
    for thread in busy:
        thread.start()
    threading.Timer(10, release.set).start()  # a /healthz stuck behind the pool fails, not hangs
    try:
        assert wait_until(lambda: limiter.borrowed_tokens == limiter.total_tokens, 10)
        started = time.monotonic()
        assert api.client.get("/healthz").json() == {"status": "ok"}
        assert time.monotonic() - started < 1.0
    finally:
        release.set()
        for thread in busy:
            thread.join(timeout=10)


# --- the hub's guarantees, through the API in-process --------------------------------------------

def _running_job(api: ApiHarness) -> tuple[str, int]:
    response = api.client.post("/v1/jobs", json=api.job_body(), headers=api.auth())
    assert response.status_code == 201, response.text
    job_id = str(response.json()["id"])
    with api.sessions() as session:
        token = jobs_repo.claim_job(session=session, job_id=job_id, worker_id="w1", lease_s=60)
        session.commit()
    assert token is not None
    return job_id, token


def _finish(api: ApiHarness, job_id: str, token: int) -> int:
    with api.sessions() as session:
        jobs_repo.finish_job(session=session, job_id=job_id, token=token,
                             status=JobStatus.COMPLETED, message="completed")
        session.commit()
        return max(e.id for e in metrics_repo.list_events_after(session=session, job_id=job_id))


def _publish(job_id: str, event_id: int) -> None:
    import redis

    with redis.Redis.from_url(REDIS_URL, socket_timeout=2) as publisher:
        publisher.publish(events_channel(job_id), json.dumps({"id": event_id}))


@pytest.mark.timeout(60)
def test_a_late_commit_with_a_smaller_id_is_still_sent(tmp_path: Path, api_db_url: str,
                                                       api_sessions: Any) -> None:
    """PostgreSQL hands out ids at INSERT: the row with the smaller id may commit second."""
    harness = api_fixtures.make_harness(tmp_path, api_db_url, api_sessions, redis_url=REDIS_URL)
    api = next(harness)
    try:
        job_id, token = _running_job(api)
        ids: dict[str, int] = {}

        def worker() -> None:
            time.sleep(0.5)
            with api.sessions() as slow, api.sessions() as fast:
                early = metrics_repo.add_event(session=slow, job_id=job_id,
                                               kind=EventKind.EPOCH, payload=epoch_record(1))
                late = metrics_repo.add_event(session=fast, job_id=job_id,
                                              kind=EventKind.EPOCH, payload=epoch_record(2))
                ids.update(smaller=early.id, larger=late.id)
                fast.commit()
                _publish(job_id, late.id)
                time.sleep(0.8)  # the larger id is sent first
                slow.commit()
                _publish(job_id, early.id)
            time.sleep(0.5)
            _publish(job_id, _finish(api, job_id, token))

        thread = threading.Thread(target=worker)
        with api.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=api.auth()) as r:
            thread.start()
            events = parse_sse(r.read().decode())
        thread.join()
        sent = [int(e["id"]) for e in events if e["event"] == "epoch"]
        assert ids["smaller"] < ids["larger"]
        assert sent == [ids["larger"], ids["smaller"]], (sent, ids)
        assert [e["event"] for e in events] == ["status", "status", "epoch", "epoch", "status"]
        assert json.loads(events[-1]["data"])["status"] == "completed"
    finally:
        harness.close()


@pytest.fixture(params=["refused", "hung"])
def dead_redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis URL nothing answers on: a closed port, or a socket that accepts and never
    replies (like a stopped redis-server)."""
    import socket

    if request.param == "refused":
        yield f"redis://127.0.0.1:{free_port()}/0"
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes connections; nothing ever reads or answers
        yield f"redis://127.0.0.1:{silent.getsockname()[1]}/0"


@pytest.mark.timeout(60)
def test_streams_poll_the_database_while_redis_is_down_or_hung(
        tmp_path: Path, api_db_url: str, api_sessions: Any, dead_redis_url: str) -> None:
    harness = api_fixtures.make_harness(tmp_path, api_db_url, api_sessions,
                                        redis_url=dead_redis_url)
    api = next(harness)
    try:
        job_id, token = _running_job(api)

        def worker() -> None:
            for epoch in (1, 2):
                time.sleep(0.3)
                with api.sessions() as session:
                    metrics_repo.add_event(session=session, job_id=job_id,
                                           kind=EventKind.EPOCH, payload=epoch_record(epoch))
                    session.commit()
            time.sleep(0.3)
            _finish(api, job_id, token)

        thread = threading.Thread(target=worker)
        started = time.monotonic()
        with api.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=api.auth()) as r:
            thread.start()
            events = parse_sse(r.read().decode())
        thread.join()
        assert [e["event"] for e in events] == ["status", "status", "epoch", "epoch", "status"]
        assert time.monotonic() - started < 10
        hub = api.client.app.state.event_hub  # type: ignore[attr-defined]
        assert not hub.redis_ok and hub.polls > 0
    finally:
        harness.close()


@pytest.mark.timeout(90)
def test_a_hung_redis_is_noticed_and_streams_go_on(tmp_path: Path, api_db_url: str,
                                                   api_sessions: Any) -> None:
    """A redis-server of the test's own, stopped (SIGSTOP) while the hub is subscribed: the
    hub's PING goes unanswered, it falls back to polling, and it subscribes again once the
    server continues."""
    import signal
    import subprocess

    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    harness = None
    try:
        harness = api_fixtures.make_harness(tmp_path, api_db_url, api_sessions,
                                            redis_url=f"redis://127.0.0.1:{port}/0")
        api = next(harness)
        hub = api.client.app.state.event_hub  # type: ignore[attr-defined]
        assert wait_until(lambda: hub.redis_ok, 15), "the hub never subscribed"
        job_id, token = _running_job(api)
        server.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()

        def worker() -> None:  # no publish: Redis is hung (the worker's publish times out)
            for epoch in (1, 2):
                time.sleep(0.3)
                with api.sessions() as session:
                    metrics_repo.add_event(session=session, job_id=job_id,
                                           kind=EventKind.EPOCH, payload=epoch_record(epoch))
                    session.commit()
            time.sleep(0.3)
            _finish(api, job_id, token)

        thread = threading.Thread(target=worker)
        with api.client.stream("GET", f"/v1/jobs/{job_id}/events", headers=api.auth()) as r:
            thread.start()
            events = parse_sse(r.read().decode())
        thread.join()
        assert [e["event"] for e in events] == ["status", "status", "epoch", "epoch", "status"]
        assert time.monotonic() - stopped < 8  # safety polls, at worst, while not yet noticed
        assert wait_until(lambda: not hub.redis_ok, 15), "a hung Redis went unnoticed"
        noticed = time.monotonic() - stopped
        server.send_signal(signal.SIGCONT)
        assert wait_until(lambda: hub.redis_ok, 20), "the hub did not subscribe again"
        print(f"\n[streams-scale] hung Redis noticed after {noticed:.1f} s; "  # noqa: T201
              f"subscribed again {time.monotonic() - stopped - noticed:.1f} s after SIGCONT")
    finally:
        if harness is not None:
            harness.close()
        server.send_signal(signal.SIGCONT)
        server.terminate()
        server.wait(timeout=10)


# --- SQLite (the embedded stack, no Redis): the commit probe ----------------------------------

@dataclass
class SqliteJob:
    """A migrated SQLite file holding one job, as the embedded stack has it."""

    engine: Engine
    factory: sessionmaker[Session]
    job_id: str

    def commit_epoch(self, epoch: int) -> None:
        with self.factory() as session, session.begin():
            metrics_repo.add_event(session=session, job_id=self.job_id, kind=EventKind.EPOCH,
                                   payload=epoch_record(epoch))


@pytest.fixture
def sqlite_job(tmp_path: Path) -> Iterator[SqliteJob]:
    from streamguard.db.tenants import get_or_create_tenant

    db_url = f"sqlite:///{(tmp_path / 'streamguard.db').as_posix()}"
    upgrade(db_url)
    engine = make_engine(db_url)
    factory = make_session_factory(engine)
    with factory() as session, session.begin():
        tenant = get_or_create_tenant(session=session, name="acme")
        job_id = jobs_repo.create_job(session=session, tenant_id=tenant.id, spec={},
                                      total_epochs=2).id
    try:
        yield SqliteJob(engine, factory, job_id)
    finally:
        engine.dispose()


@pytest.mark.timeout(60)
def test_sqlite_streams_get_a_commit_without_waiting_for_the_poll(sqlite_job: SqliteJob) -> None:
    """The hub asks SQLite between its reads (`CommitProbe`): a committed event is forwarded in
    about PROBE_S even with a 30 s poll period, and while nothing commits the hub does not read.
    (With the earlier file-stat probe this failed about 1 run in 4 under CPU load: the log grew
    before the commit was visible, so the hub read too early and then waited out the period.)"""
    from api.streams import PROBE_S, EventHub
    from streamguard.db.session import commit_probe

    probe = commit_probe(sqlite_job.engine)
    assert probe is not None

    async def scenario() -> tuple[list[float], int, int]:
        hub = EventHub(sqlite_job.factory, poll_s=30.0, commit_probe=probe)
        await hub.start()
        try:
            listener = hub.subscribe(sqlite_job.job_id, 0)
            delays, epochs_seen = [], 0
            for epoch in (1, 2):
                await asyncio.sleep(0.3)
                started = time.monotonic()
                await asyncio.to_thread(sqlite_job.commit_epoch, epoch)
                while epochs_seen < epoch:  # the first batch also holds the `queued` status
                    batch = await asyncio.wait_for(listener.queue.get(), 10)
                    epochs_seen += sum(b"event: epoch" in m.frame for m in batch)
                delays.append(time.monotonic() - started)
            polls = hub.polls
            await asyncio.sleep(10 * PROBE_S)  # nothing commits: no read
            return delays, polls, hub.polls
        finally:
            await hub.stop()

    try:
        delays, polls_before, polls_after = asyncio.run(scenario())
    finally:
        probe.close()
    assert max(delays) < 1.0, delays  # the poll period alone would take 30 s
    assert polls_after == polls_before, (polls_before, polls_after)


@pytest.mark.timeout(60)
def test_the_first_stream_of_an_idle_sqlite_hub_starts_the_probe_at_once(
        sqlite_job: SqliteJob) -> None:
    """An idle hub (nobody streaming) does not probe; the first subscriber starts probing at
    once instead of after the rest of the poll period (before the fix the first event of a
    stream opened on an idle API waited up to `POLL_S`; here, with 30 s, the whole wait)."""
    from api.streams import EventHub
    from streamguard.db.session import commit_probe

    probe = commit_probe(sqlite_job.engine)
    assert probe is not None

    async def scenario() -> float:
        hub = EventHub(sqlite_job.factory, poll_s=30.0, commit_probe=probe)
        await hub.start()
        try:
            await asyncio.sleep(0.5)  # the poller passed once and waits: nobody streams
            assert hub.polls == 0
            listener = hub.subscribe(sqlite_job.job_id, 0)
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await asyncio.to_thread(sqlite_job.commit_epoch, 1)
            while True:
                batch = await asyncio.wait_for(listener.queue.get(), 10)
                if any(b"event: epoch" in m.frame for m in batch):
                    return time.monotonic() - started
        finally:
            await hub.stop()

    try:
        delay = asyncio.run(scenario())
    finally:
        probe.close()
    assert delay < 1.0, delay
