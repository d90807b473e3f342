"""Faults of the dependencies, with real processes: misconfigured workers, Redis down and hung,
SQLite under load, and an artifact store that is read-only or full (issue 7, tests 5, 6, 8, 9).

Every service here is real: PostgreSQL (127.0.0.1:5432), a redis-server this module starts on its
own port (never the shared 6379 one: it is stopped with SIGSTOP and killed), Celery worker
processes, uvicorn API processes, and, for the store faults, a tmpfs mounted for the test (root
can write through chmod, but not through a read-only mount, and a tmpfs fills up for root too).

Bounded: every wait has a deadline; processes are stopped (and the tmpfs unmounted) in `finally`.
Figures (worst latency while Redis is hung, 5xx under load) are printed and written to
`<tmp>/figures.json`.

Run: .venv/bin/pytest -m integration tests/integration/test_faults.py -s
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from streamguard.db.migrate import upgrade
from streamguard.db.session import make_engine, make_session_factory
from streamguard.db.tenants import create_tenant_key
from streamguard.synth import synth_examples, write_jsonl
from tests.e2e.harness import (
    TERMINAL,
    VENV_BIN,
    Proc,
    api_cmd,
    base_env,
    dump_logs,
    free_port,
    iter_sse,
    wait_ready,
    worker_cmd,
)
from tests.integration.db_fixtures import PG_ADMIN_DSN, fresh_pg_database

pytestmark = pytest.mark.integration

#: test_worker.py's tiny job: 1,200 synthetic rows / batch 8 = 150 steps an epoch, enough for
#: the from-scratch model to predict both classes at its first evaluation (no collapse stop).
CONFIG: dict[str, Any] = {"model": "tiny", "max_seq_len": 96, "tokenizer_vocab_size": 600,
                          "batch_size": 8, "lr": 1e-3, "epochs": 2, "early_stopping_patience": 0}
SPLITS = {"train": 1200, "val": 100, "test": 100}
REFUSAL = "streamguard worker: refusing to start:"
#: The issue's bound for any request while a dependency is down or hung.
MAX_REQUEST_S = 5.0


# --- shared helpers ------------------------------------------------------------------------------

def write_splits(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (split, n) in enumerate(SPLITS.items()):
        paths[split] = folder / f"{split}.jsonl"
        write_jsonl(synth_examples(n, seed=i, vulnerable_fraction=0.46, id_prefix=split),
                    paths[split])
    return paths


def tenant_key(db_url: str, name: str = "faults") -> str:
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            return create_tenant_key(session=session, tenant_name=name)[1]
    finally:
        engine.dispose()


@dataclass
class Client:
    """HTTP over loopback with a bearer key; every call is timed."""

    base_url: str
    key: str
    procs: list[Proc] = field(default_factory=list)

    def http(self, timeout: float = 60.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout,
                            headers={"Authorization": f"Bearer {self.key}"})

    def upload(self, path: Path, name: str, *, expect: int | None = 201) -> httpx.Response:
        with self.http() as c, path.open("rb") as fh:
            r = c.post("/v1/datasets", data={"name": name},
                       files={"file": (path.name, fh, "application/x-ndjson")})
        if expect is not None:
            assert r.status_code == expect, r.text
        return r

    def upload_splits(self, splits: dict[str, Path]) -> dict[str, dict[str, str]]:
        return {split: {"dataset_id": self.upload(path, f"synth-{split}").json()["id"]}
                for split, path in splits.items()}

    def submit(self, refs: dict[str, Any], **config: Any) -> dict[str, Any]:
        with self.http() as c:
            r = c.post("/v1/jobs", json=job_body(refs, **config))
        assert r.status_code == 201, r.text
        return dict(r.json())

    def job(self, job_id: str) -> dict[str, Any]:
        with self.http() as c:
            r = c.get(f"/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        with self.http() as c:
            r = c.get(f"/v1/jobs/{job_id}/metrics", params={"limit": 200})
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def wait_job(self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout_s: float,
                 what: str) -> dict[str, Any]:
        deadline, job = time.monotonic() + timeout_s, {}
        while time.monotonic() < deadline:
            for p in self.procs:
                p.check_alive()
            job = self.job(job_id)
            if until(job):
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id}: not {what} after {timeout_s:.0f} s: {job}")


def job_body(refs: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {"name": "faults", "datasets": refs, "config": {**CONFIG, **config}}


def is_terminal(job: dict[str, Any]) -> bool:
    return job["status"] in TERMINAL


def record_figures(tmp: Path, name: str, figures: dict[str, Any]) -> None:
    path = tmp / "figures.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2))
    print(f"\nFIGURES {name}: {json.dumps(figures)}")  # noqa: T201


def check_ran_once(client: Client, job: dict[str, Any]) -> None:
    """Completed in one attempt: one running transition, one metrics row per epoch."""
    assert job["status"] == "completed", job
    assert job["attempts"] == 1, job
    epochs = [row["epoch"] for row in client.metrics(job["id"])]
    assert epochs == list(range(1, job["progress"]["epochs"] + 1)), epochs
    running = [t for t in job["transitions"] if t["to_status"] == "running"]
    assert len(running) == 1, job["transitions"]


# --- 5. workers refuse to start misconfigured ---------------------------------------------------

@pytest.fixture(scope="module")
def good_db() -> Iterator[str]:
    with fresh_pg_database() as url:
        upgrade(url)
        yield url


def _fs_broker_env(tmp: Path, db_url: str) -> dict[str, str]:
    env = base_env()
    env.update({"SG_ENV": "dev", "SG_DATA_DIR": str(tmp / "data"), "SG_DB__URL": db_url,
                "SG_STORAGE__URI": (tmp / "store").as_uri(),
                "SG_WORKER__QUEUE": f"faults-{uuid.uuid4().hex[:8]}"})
    return env


def _queued_job_with_message(db_url: str, env: dict[str, str]) -> tuple[str, Path]:
    """A queued job in `db_url` whose task waits in the filesystem broker; (job id, folder)."""
    from api.queue import build_celery, celery_enqueue
    from streamguard.db.jobs import create_job
    from streamguard.db.tenants import get_or_create_tenant
    from streamguard.settings import Settings

    settings = Settings(data_dir=Path(env["SG_DATA_DIR"]), db={"url": db_url},
                        worker={"queue": env["SG_WORKER__QUEUE"]})
    settings.ensure_dirs()
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            tenant = get_or_create_tenant(session=session, name=f"pf-{uuid.uuid4().hex[:6]}")
            job_id = create_job(session=session, tenant_id=tenant.id, spec={"x": 1},
                                total_epochs=1).id
    finally:
        engine.dispose()
    celery_enqueue(build_celery(settings), settings.worker.queue)(job_id)
    return job_id, settings.broker_dir / "queue"


def _job_row(db_url: str, job_id: str) -> tuple[Any, ...]:
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT status, attempts, started_at, lease_owner, fencing_token "
                           "FROM jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("case", ["missing_database", "refused_port", "unmigrated"])
def test_worker_with_a_wrong_database_url_refuses_to_start(case: str, good_db: str,
                                                           tmp_path: Path) -> None:
    password = f"pw-{uuid.uuid4().hex}"  # trust auth ignores it; it must never be printed
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    with _unmigrated_db(case) as unmigrated_url:
        if case == "missing_database":
            url, expect = f"{base}/streamguard_missing_{uuid.uuid4().hex[:8]}", "unreachable"
        elif case == "refused_port":
            url, expect = f"postgresql://postgres@127.0.0.1:{free_port()}/x", "unreachable"
        else:
            url, expect = unmigrated_url, "not migrated"
        url = url.replace("postgres@", f"postgres:{password}@", 1)
        env = _fs_broker_env(tmp_path, url)
        job_id, queue_dir = _queued_job_with_message(good_db, env)
        before_row, before_msgs = _job_row(good_db, job_id), sorted(os.listdir(queue_dir))
        assert before_msgs, "the task should wait in the filesystem broker"

        started = time.monotonic()
        proc = subprocess.run(worker_cmd(env["SG_WORKER__QUEUE"], "pf@%h"), env=env,
                              capture_output=True, text=True, timeout=240, cwd=tmp_path)
        elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    lines = [line for line in proc.stderr.splitlines() if line.startswith(REFUSAL)]
    assert len(lines) == 1, output
    line = lines[0]
    assert "database" in line and expect in line, line
    assert password not in output, "the password leaked into the worker's output"
    assert "ready." not in output and "Task worker.tasks.train_job" not in output, output
    # nothing was consumed: the message still waits, and the job did not change
    assert sorted(os.listdir(queue_dir)) == before_msgs
    assert _job_row(good_db, job_id) == before_row
    assert before_row[0] == "queued" and before_row[1] == 0
    print(f"\n{case}: exit {proc.returncode} after {elapsed:.1f} s: {line}")  # noqa: T201


@contextmanager
def _unmigrated_db(case: str) -> Iterator[str]:
    """An empty (never migrated) PostgreSQL database for the `unmigrated` case."""
    if case != "unmigrated":
        yield ""
        return
    with fresh_pg_database() as url:
        yield url


def test_worker_with_a_broken_store_refuses_and_streamguard_up_says_why(tmp_path: Path) -> None:
    """`streamguard up` with its store root taken by a regular file: the worker refuses to start
    (store not writable) and `up` exits non-zero, printing the worker's line."""
    data_dir = tmp_path / "sg"
    data_dir.mkdir()
    (data_dir / "artifacts").write_text("not a folder\n")
    port = free_port()
    proc = subprocess.run([str(VENV_BIN / "streamguard"), "up", "--no-demo", "--port", str(port),
                           "--data-dir", str(data_dir)], env=base_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if "streamguard up: error" in line]
    assert errors and REFUSAL in errors[0] and "artifact store" in errors[0], proc.stdout
    assert "not writable" in errors[0], errors[0]


# --- 6. Redis shut down and Redis hung -----------------------------------------------------------

class RedisServer:
    """A redis-server of this test on its own port, nothing kept on disk."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.stopped = False
        folder.mkdir(parents=True, exist_ok=True)
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)], stdout=log, stderr=log)
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
            finally:
                client.close()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.stopped = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.stopped:
            self.resume()
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc = None


@dataclass
class Probe:
    name: str
    seconds: float
    outcome: str  # HTTP status or exception name


def _timed(name: str, fn: Callable[[], str]) -> Probe:
    started = time.monotonic()
    try:
        outcome = fn()
    except httpx.HTTPError as exc:
        outcome = type(exc).__name__
    return Probe(name, time.monotonic() - started, outcome)


def _probe_all(client: Client, refs: dict[str, Any], running_job: str) -> list[Probe]:
    """One of each request the issue names: submit, get, SSE open (first event), readyz."""
    limit = httpx.Timeout(MAX_REQUEST_S * 3)

    def submit() -> str:
        with client.http() as c:
            r = c.post("/v1/jobs", json=job_body(refs), timeout=limit)
        if r.status_code == 503:
            assert r.json()["error"]["code"] in ("queue_unavailable",
                                                 "dependency_unavailable"), r.text
        return str(r.status_code)

    def get() -> str:
        with client.http() as c:
            return str(c.get(f"/v1/jobs/{running_job}", timeout=limit).status_code)

    def readyz() -> str:
        return str(httpx.get(f"{client.base_url}/readyz", timeout=limit).status_code)

    def healthz() -> str:
        return str(httpx.get(f"{client.base_url}/healthz", timeout=limit).status_code)

    def sse_open() -> str:
        with client.http() as c, c.stream("GET", f"/v1/jobs/{running_job}/events",
                                          timeout=limit) as r:
            if r.status_code != 200:
                return str(r.status_code)
            for _event in iter_sse(r.iter_lines(), lambda: None):
                return "200+event"  # the replay's first event arrived
        return "200-empty"

    return [_timed(name, fn) for name, fn in (("submit", submit), ("get", get),
                                              ("readyz", readyz), ("healthz", healthz),
                                              ("sse_open", sse_open))]


@dataclass
class RedisStack:
    client: Client
    redis: RedisServer
    refs: dict[str, Any]
    db_url: str
    tmp: Path
    api: Proc
    worker: Proc


@pytest.fixture(scope="module")
def redis_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisStack]:
    tmp = tmp_path_factory.mktemp("faults_redis")
    server = RedisServer(tmp / "redis")
    procs: list[Proc] = []
    try:
        with fresh_pg_database() as db_url:
            upgrade(db_url)
            key = tenant_key(db_url)
            env = base_env()
            env.update({
                "SG_ENV": "dev", "SG_DATA_DIR": str(tmp / "data"), "SG_DB__URL": db_url,
                "SG_REDIS__URL": server.url, "SG_BROKER__URL": server.url,
                "SG_STORAGE__URI": (tmp / "store").as_uri(),
                "SG_WORKER__QUEUE": f"faults-{uuid.uuid4().hex[:8]}",
                "SG_API__RATE_LIMIT_PER_MINUTE": "0", "SG_API__SSE_PING_S": "2",
                "SG_API__MAX_QUEUED_JOBS_PER_TENANT": "1000",
            })
            port = free_port()
            api = Proc("api", api_cmd(port), env, tmp / "logs" / "api.log")
            procs.append(api)
            worker = Proc("worker", worker_cmd(env["SG_WORKER__QUEUE"], "faults@%h"), env,
                          tmp / "logs" / "worker.log")
            procs.append(worker)
            client = Client(f"http://127.0.0.1:{port}", key, [api, worker])
            wait_ready(client.base_url, [api, worker])
            worker.wait_for_output(lambda line: line.rstrip().endswith("ready."), 180)
            refs = client.upload_splits(write_splits(tmp / "splits"))
            stack = RedisStack(client, server, refs, db_url, tmp, api, worker)
            try:
                yield stack
            except BaseException:
                dump_logs(procs)
                raise
            finally:
                for p in procs:
                    p.stop()
    finally:
        server.kill()


def _outage(stack: RedisStack, job_id: str, seconds: float) -> list[Probe]:
    """Probe every request kind repeatedly for `seconds` of outage."""
    probes: list[Probe] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline or not probes:
        probes += _probe_all(stack.client, stack.refs, job_id)
    return probes


def _check_probes(probes: list[Probe], label: str) -> dict[str, Any]:
    slow = [p for p in probes if p.seconds > MAX_REQUEST_S]
    assert not slow, f"{label}: requests over {MAX_REQUEST_S} s: {slow}"
    errors = [p for p in probes if p.outcome not in ("200", "201", "503", "200+event")]
    assert not errors, f"{label}: unexpected outcomes: {errors}"
    by_name: dict[str, list[Probe]] = defaultdict(list)
    for p in probes:
        by_name[p.name].append(p)
    # the broker is this Redis: a submit cannot be queued, so it must say so (503)
    assert {p.outcome for p in by_name["submit"]} == {"503"}, by_name["submit"]
    assert {p.outcome for p in by_name["readyz"]} == {"503"}, by_name["readyz"]
    assert {p.outcome for p in by_name["get"]} == {"200"}, by_name["get"]
    assert {p.outcome for p in by_name["sse_open"]} == {"200+event"}, by_name["sse_open"]
    return {"requests": len(probes),
            "worst_s": round(max(p.seconds for p in probes), 3),
            "worst_by_request_s": {name: round(max(p.seconds for p in ps), 3)
                                   for name, ps in by_name.items()}}


def _refused_submits_left_nothing(stack: RedisStack, since: set[str]) -> list[str]:
    """503 submits store no job (checked after Redis is back): every job is one we know."""
    with stack.client.http() as c:
        r = c.get("/v1/jobs", params={"limit": 200})
    assert r.status_code == 200, r.text
    return [j["id"] for j in r.json()["items"] if j["id"] not in since]


def _all_job_ids(stack: RedisStack) -> set[str]:
    with stack.client.http() as c:
        r = c.get("/v1/jobs", params={"limit": 200})
    return {j["id"] for j in r.json()["items"]}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("fault", ["hung", "shut_down"])
def test_redis_fault_bounds_every_request_and_jobs_complete_once(
        fault: str, redis_stack: RedisStack) -> None:
    stack, client = redis_stack, redis_stack.client
    known = _all_job_ids(stack)
    running = client.submit(stack.refs, epochs=3)["id"]
    client.wait_job(running, lambda j: j["progress"]["epoch"] >= 1, 300, "past epoch 1")

    if fault == "hung":
        stack.redis.pause()
    else:
        stack.redis.kill()
    try:
        probes = _outage(stack, running, seconds=12)
    finally:
        if fault == "hung":
            stack.redis.resume()
        else:
            stack.redis.start()  # same port, empty: a restart loses what Redis held
    figures = _check_probes(probes, f"Redis {fault}")

    # the job that ran through the outage completes, once
    job = client.wait_job(running, is_terminal, 600, "finished")
    check_ran_once(client, job)
    time.sleep(3)  # a message published into the hung socket may surface now: it must not run
    left = _refused_submits_left_nothing(stack, known | {running})
    assert left == [], f"the outage's refused submits left jobs behind: {left}"

    # after Redis is back: a new job is queued, runs and completes, once
    after = client.submit(stack.refs, epochs=1)["id"]
    check_ran_once(client, client.wait_job(after, is_terminal, 600, "finished"))
    figures["refused_submits"] = sum(p.name == "submit" for p in probes)
    record_figures(stack.tmp, f"redis_{fault}", figures)


# --- 8. embedded mode under load ---------------------------------------------------------------

@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: list[str] = field(default_factory=list)
    ids_by_key: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, key: str, response: httpx.Response | None, seconds: float,
            error: str | None = None) -> None:
        with self.lock:
            self.latencies.append(seconds)
            if response is None:
                self.transport_errors.append(error or "?")
                return
            self.statuses[response.status_code] += 1
            if response.status_code in (200, 201):
                self.ids_by_key[key].add(response.json()["id"])


def _load_client(base_url: str, key: str, body: dict[str, Any], until: float, seed: int,
                 result: LoadResult) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, timeout=60.0,
                      headers={"Authorization": f"Bearer {key}"}) as c:
        def post(idem: str) -> None:
            started = time.monotonic()
            try:
                r = c.post("/v1/jobs", json=body, headers={"Idempotency-Key": idem})
            except httpx.HTTPError as exc:
                result.add(idem, None, time.monotonic() - started, repr(exc))
                return
            result.add(idem, r, time.monotonic() - started)

        while time.monotonic() < until:
            idem = f"load-{seed}-{uuid.uuid4().hex}"
            roll = rng.random()
            if roll < 0.1:  # the same key twice at once (a client retrying over a new socket)
                twin = threading.Thread(target=_one_post, args=(base_url, key, body, idem,
                                                                result))
                twin.start()
                post(idem)
                twin.join()
            else:
                post(idem)
            if roll > 0.75:  # a retry of the same logical submission
                post(idem)


def _one_post(base_url: str, key: str, body: dict[str, Any], idem: str,
              result: LoadResult) -> None:
    started = time.monotonic()
    try:
        r = httpx.post(f"{base_url}/v1/jobs", json=body, timeout=60.0,
                       headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem})
    except httpx.HTTPError as exc:
        result.add(idem, None, time.monotonic() - started, repr(exc))
        return
    result.add(idem, r, time.monotonic() - started)


@pytest.mark.timeout(600)
def test_embedded_sqlite_50_concurrent_submitters(tmp_path: Path) -> None:
    """SQLite + filesystem broker, a real uvicorn: 50 clients submit for 20 s, with retries and
    concurrent duplicates of their Idempotency-Keys: no 5xx, one job per key, one message per
    job."""
    data_dir = tmp_path / "sg"
    db_url = f"sqlite:///{data_dir}/streamguard.db"
    upgrade(db_url)
    key = tenant_key(db_url)
    env = base_env()
    env.update({"SG_ENV": "dev", "SG_DATA_DIR": str(data_dir), "SG_DB__URL": db_url,
                "SG_STORAGE__URI": (data_dir / "artifacts").as_uri(),
                "SG_API__RATE_LIMIT_PER_MINUTE": "0",
                "SG_API__MAX_QUEUED_JOBS_PER_TENANT": "1000000"})
    port = free_port()
    api = Proc("api", api_cmd(port), env, tmp_path / "logs" / "api.log")
    client = Client(f"http://127.0.0.1:{port}", key, [api])
    try:
        wait_ready(client.base_url, [api])
        refs = client.upload_splits(write_splits(tmp_path / "splits"))
        body = job_body({"train": refs["train"], "val": refs["val"]})
        result = LoadResult()
        until = time.monotonic() + 20
        threads = [threading.Thread(target=_load_client,
                                    args=(client.base_url, key, body, until, i, result))
                   for i in range(50)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=200)
        wall = time.monotonic() - started
        assert not any(t.is_alive() for t in threads), "a load client did not finish"
        api.check_alive()
    except BaseException:
        dump_logs([api])
        raise
    finally:
        api.stop()

    server_errors = {s: n for s, n in result.statuses.items() if s >= 500}
    latencies = sorted(result.latencies)
    figures = {
        "requests": sum(result.statuses.values()) + len(result.transport_errors),
        "statuses": dict(result.statuses), "5xx": sum(server_errors.values()),
        "transport_errors": len(result.transport_errors), "keys": len(result.ids_by_key),
        "wall_s": round(wall, 1),
        "p50_s": round(statistics.median(latencies), 3),
        "p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
        "max_s": round(latencies[-1], 3)}
    record_figures(tmp_path, "embedded_load", figures)
    assert not server_errors, figures
    assert not result.transport_errors, result.transport_errors[:5]
    assert set(result.statuses) <= {200, 201}, figures
    assert len(result.ids_by_key) > 100, figures
    multi = {k: ids for k, ids in result.ids_by_key.items() if len(ids) != 1}
    assert not multi, f"keys answered with several job ids: {list(multi.items())[:5]}"

    with sqlite3.connect(data_dir / "streamguard.db") as db:
        rows = db.execute("SELECT idempotency_key, COUNT(*), MIN(id) FROM jobs "
                          "WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key").fetchall()
        statuses = dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"))
    per_key = {k: (n, job_id) for k, n, job_id in rows}
    assert all(n == 1 for n, _ in per_key.values()), [k for k, (n, _) in per_key.items() if n > 1]
    assert set(per_key) == set(result.ids_by_key), "a job without a 2xx, or a 2xx without a job"
    for idem, ids in result.ids_by_key.items():
        assert ids == {per_key[idem][1]}, idem
    assert statuses == {"queued": len(per_key)}, statuses
    # each job was sent to the broker exactly once (replays send nothing)
    messages = [p for p in (data_dir / "broker" / "queue").iterdir() if p.is_file()]
    assert len(messages) == len(per_key), (len(messages), len(per_key))


# --- 9. the artifact store read-only and full ---------------------------------------------------

class TinyFs:
    """A tmpfs mounted for the test: remountable read-only, and fillable to ENOSPC (root
    ignores permissions, not a read-only mount nor a full filesystem)."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755",
                              "tmpfs", str(path)], capture_output=True, text=True)
        if out.returncode != 0:
            pytest.fail(f"cannot mount a tmpfs for the store tests (needs root with "
                        f"CAP_SYS_ADMIN): {out.stderr.strip()}")
        self.filler = path / "filler.bin"

    def remount(self, mode: str) -> None:
        deadline = time.monotonic() + 30
        while True:  # a file open for writing (a checkpoint being saved) makes it busy
            out = subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)],
                                 capture_output=True, text=True)
            if out.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"remount {mode} failed: {out.stderr}")
            time.sleep(0.2)

    def fill(self, leave_bytes: int) -> None:
        """Write a filler file until only about `leave_bytes` are free."""
        free = shutil.disk_usage(self.path).free
        with self.filler.open("wb") as out:
            chunk = b"\0" * (1 << 20)
            remaining = max(0, free - leave_bytes)
            with suppress(OSError):
                while remaining > 0:
                    n = min(len(chunk), remaining)
                    out.write(chunk[:n])
                    remaining -= n
                out.flush()

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)

    def dataset_files(self) -> set[str]:
        """Every file in the datasets' area (jobs write their own files meanwhile)."""
        return {str(p.relative_to(self.path)) for p in self.path.glob("tenants/*/datasets/*")}

    def unmount(self) -> None:
        out = subprocess.run(["umount", str(self.path)], capture_output=True, text=True)
        if out.returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, text=True)


@dataclass
class StoreStack:
    client: Client
    fs: TinyFs
    refs: dict[str, Any]
    splits: dict[str, Path]
    tmp: Path
    api: Proc
    worker: Proc


@pytest.fixture(scope="module")
def store_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreStack]:
    tmp = tmp_path_factory.mktemp("faults_store")
    fs = TinyFs(tmp / "store", size_mb=256)
    procs: list[Proc] = []
    try:
        data_dir = tmp / "sg"
        db_url = f"sqlite:///{data_dir}/streamguard.db"
        upgrade(db_url)
        key = tenant_key(db_url)
        env = base_env()
        env.update({"SG_ENV": "dev", "SG_DATA_DIR": str(data_dir), "SG_DB__URL": db_url,
                    "SG_STORAGE__URI": fs.path.as_uri(), "SG_API__RATE_LIMIT_PER_MINUTE": "0"})
        port = free_port()
        api = Proc("api", api_cmd(port), env, tmp / "logs" / "api.log")
        procs.append(api)
        worker = Proc("worker", worker_cmd("gpu", "store@%h"), env, tmp / "logs" / "worker.log")
        procs.append(worker)
        client = Client(f"http://127.0.0.1:{port}", key, [api, worker])
        wait_ready(client.base_url, [api, worker])
        worker.wait_for_output(lambda line: line.rstrip().endswith("ready."), 180)
        splits = write_splits(tmp / "splits")
        refs = client.upload_splits(splits)
        try:
            yield StoreStack(client, fs, refs, splits, tmp, api, worker)
        except BaseException:
            dump_logs(procs)
            raise
    finally:
        for p in procs:
            p.stop()
        fs.unmount()


def _readyz(client: Client) -> httpx.Response:
    started = time.monotonic()
    r = httpx.get(f"{client.base_url}/readyz", timeout=MAX_REQUEST_S * 3)
    assert time.monotonic() - started < MAX_REQUEST_S, "readyz took too long"
    return r


def _datasets(client: Client) -> list[str]:
    with client.http() as c:
        r = c.get("/v1/datasets", params={"limit": 200})
    assert r.status_code == 200, r.text
    return [d["id"] for d in r.json()["items"]]


def _store_fault(stack: StoreStack, *, fault: str, inject: Callable[[], None],
                 heal: Callable[[], None], reason: str) -> None:
    client = stack.client
    job_id = client.submit(stack.refs, epochs=6)["id"]  # more: the warmup spans epoch 1
    job = client.wait_job(job_id, lambda j: j["progress"]["epoch"] >= 1 or is_terminal(j), 400,
                          "past epoch 1")
    assert job["status"] == "running", job
    datasets_before = _datasets(client)
    inject()
    try:
        epoch_at_fault = client.job(job_id)["progress"]["epoch"]
        files_before = stack.fs.dataset_files()

        ready = _readyz(client)
        assert ready.status_code == 503, ready.text
        error = ready.json()["error"]
        assert "store" in error["message"], error
        store_check = [d for d in error["details"] if d["field"] == "store"]
        assert store_check and store_check[0]["message"].startswith("failed"), error

        r = client.upload(stack.splits["train"], f"during-{fault}", expect=None)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "store_unavailable", r.text
        assert str(stack.fs.path) not in r.text and str(stack.tmp) not in r.text, r.text
        # nothing half-stored: no new row, no new object, no partial file left behind
        assert _datasets(client) == datasets_before
        assert stack.fs.dataset_files() == files_before

        # the running job fails at its next checkpoint, saying why, with no server path
        job = client.wait_job(job_id, is_terminal, 400, "finished")
        assert job["status"] == "failed", job
        message = job["outcome_message"] or ""
        assert "artifact store" in message and reason in message, message
        for leak in (str(stack.fs.path), str(stack.tmp), "/tmp/", "/work/"):
            assert leak not in message, message
        assert job["progress"]["epoch"] <= epoch_at_fault + 1, (epoch_at_fault, job)
        print(f"\nstore {fault}: upload -> {r.status_code} {r.json()['error']['message']!r}; "  # noqa: T201
              f"job failed after epoch {job['progress']['epoch']} (fault at epoch "
              f"{epoch_at_fault}): {message!r}")
    finally:
        heal()
    assert _readyz(client).status_code == 200


@pytest.mark.timeout(900)
def test_store_read_only(store_stack: StoreStack) -> None:
    fs = store_stack.fs
    _store_fault(store_stack, fault="read-only", inject=lambda: fs.remount("ro"),
                 heal=lambda: fs.remount("rw"), reason="read-only")


@pytest.mark.timeout(900)
def test_store_full(store_stack: StoreStack) -> None:
    fs = store_stack.fs
    # ~64 KiB left: the upload (about 200 KiB) starts writing, then runs out of space
    _store_fault(store_stack, fault="full", inject=lambda: fs.fill(64 * 1024),
                 heal=fs.unfill, reason="full")


# --- bounded calls, in process (no worker): the engine's timeouts and the 503 mapping ----------

@contextmanager
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung server)."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()


def test_postgres_engine_is_bounded_by_db_settings(good_db: str) -> None:
    import sqlalchemy as sa
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from api.dependency_errors import dependency_failure
    from streamguard.settings import DbSettings

    db = DbSettings(url=good_db, statement_timeout_ms=300, pool_size=1, max_overflow=0,
                    pool_timeout_s=0.5, connect_timeout_s=2)
    engine = make_engine(db)
    try:
        assert engine.pool.size() == 1 and engine.pool.timeout() == 0.5  # type: ignore[attr-defined]
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "300ms"
            started = time.monotonic()
            with pytest.raises(OperationalError) as slow:
                conn.execute(sa.text("SELECT pg_sleep(5)"))
            assert time.monotonic() - started < 2
            failure = dependency_failure(slow.value)
            assert failure is not None and failure.code == "dependency_unavailable"
            assert failure.dependency == "database" and "pg_sleep" not in failure.message
            conn.rollback()
            started = time.monotonic()
            with pytest.raises(PoolTimeout) as busy:  # the one pooled connection is in use
                engine.connect()
            assert time.monotonic() - started < 2
            failure = dependency_failure(busy.value)
            assert failure is not None and "busy" in failure.message
    finally:
        engine.dispose()

    with blackhole() as port:
        hung = make_engine(DbSettings(url=f"postgresql://u@127.0.0.1:{port}/x",
                                      connect_timeout_s=2))
        started = time.monotonic()
        with pytest.raises(OperationalError) as info:
            hung.connect()
        assert time.monotonic() - started < MAX_REQUEST_S
        assert dependency_failure(info.value) is not None
        hung.dispose()


def _backend_pid(engine: Any) -> int:
    import sqlalchemy as sa

    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_postgres_pings_only_connections_that_sat_idle(good_db: str) -> None:
    """`db.ping_idle_s`: a pooled connection back in use sooner is not pinged; one idle longer
    is, and a dead one is replaced before any statement sees it. A connection cut inside the
    window fails its statement once, and the next checkout is a fresh connection."""
    from sqlalchemy.exc import OperationalError

    from api.dependency_errors import dependency_failure
    from streamguard.settings import DbSettings

    one = {"pool_size": 1, "max_overflow": 0}
    assert make_engine(DbSettings(url=good_db, ping_idle_s=0)).pool._pre_ping  # type: ignore[attr-defined]

    engine = make_engine(DbSettings(url=good_db, ping_idle_s=0.3, **one))
    pings: list[float] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(time.monotonic())
        return ping(dbapi_connection)

    engine.dialect.do_ping = counted  # type: ignore[method-assign]
    try:
        assert not engine.pool._pre_ping  # type: ignore[attr-defined]
        first = _backend_pid(engine)
        assert {_backend_pid(engine) for _ in range(20)} == {first}  # reused at once
        assert pings == []
        time.sleep(0.4)
        assert _backend_pid(engine) == first and len(pings) == 1  # idle: pinged, alive

        _terminate(first)
        time.sleep(0.4)
        second = _backend_pid(engine)  # the ping found it dead: replaced, no error
        assert second != first and len(pings) == 2
    finally:
        engine.dispose()

    engine = make_engine(DbSettings(url=good_db, ping_idle_s=60, **one))  # inside the window
    try:
        pid = _backend_pid(engine)
        _terminate(pid)
        time.sleep(0.2)
        with pytest.raises(OperationalError) as cut:
            _backend_pid(engine)
        assert dependency_failure(cut.value) is not None  # a 503 at the API, named "database"
        assert _backend_pid(engine) != pid  # the failure invalidated it: a fresh connection
    finally:
        engine.dispose()


def test_sqlite_engine_takes_the_busy_timeout_and_writes_begin_immediate(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from streamguard.settings import DbSettings

    engine = make_engine(DbSettings(url=f"sqlite:///{tmp_path}/x.db",
                                    sqlite_busy_timeout_ms=1234))
    other = make_engine(DbSettings(url=f"sqlite:///{tmp_path}/x.db", sqlite_busy_timeout_ms=300))
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
            conn.exec_driver_sql("CREATE TABLE t (n INTEGER)")
        with engine.connect() as reader, other.connect() as writer:
            reader.execute(sa.text("SELECT count(*) FROM t"))  # a read: DEFERRED, no lock
            writer.execute(sa.text("INSERT INTO t VALUES (1)"))  # so a writer is not blocked
            writer.commit()
            reader.execute(sa.text("INSERT INTO t VALUES (2)"))  # upgraded: no stale snapshot
            reader.commit()
        with engine.connect() as holder, other.connect() as waiter:
            holder.execute(sa.text("INSERT INTO t VALUES (3)"))  # IMMEDIATE: holds the lock
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                waiter.execute(sa.text("SELECT 1"))
                waiter.execute(sa.text("INSERT INTO t VALUES (4)"))
            assert 0.25 < time.monotonic() - started < 3  # waited its busy timeout, no more
            holder.commit()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT n FROM t ORDER BY n")).scalars().all() == [1, 2, 3]
    finally:
        engine.dispose()
        other.dispose()


def test_dependency_failures_answer_503_without_internals() -> None:
    import redis
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from api.dependency_errors import register_dependency_handlers
    from api.errors import register_handlers
    from streamguard.storage import StoreUnavailable

    secret = "db.internal.example:5432 password=hunter2"
    raising: dict[str, Exception] = {
        "database": OperationalError("SELECT 1", {}, Exception(secret)),
        "pool": PoolTimeout(f"QueuePool limit reached {secret}"),
        "redis": redis.exceptions.TimeoutError(f"Timeout reading from {secret}"),
        "broker": BrokerError(f"Error 111 connecting to {secret}"),
        "store": StoreUnavailable("the artifact store is read-only: writing 'datasets/d.jsonl' "
                                  "failed; retry once an operator has made the store writable "
                                  "again"),
    }
    app = FastAPI()
    register_handlers(app)
    register_dependency_handlers(app)

    @app.get("/raise/{name}")
    def _raise(name: str) -> None:
        raise raising[name]

    with TestClient(app, raise_server_exceptions=False) as client:
        for name in raising:
            r = client.get(f"/raise/{name}")
            assert r.status_code == 503, (name, r.text)
            assert r.headers["Retry-After"] == "5"
            error = r.json()["error"]
            assert error["code"] == ("store_unavailable" if name == "store"
                                     else "dependency_unavailable"), error
            assert "hunter2" not in r.text and "db.internal" not in r.text, r.text


def test_store_errors_on_a_read_only_store_name_the_key_not_the_path(tmp_path: Path) -> None:
    from streamguard.storage import LocalArtifactStore, StoreUnavailable

    fs = TinyFs(tmp_path / "ro", size_mb=1)
    try:
        store = LocalArtifactStore(fs.path)
        store.put_bytes(b"x", "tenants/t1/datasets/a.jsonl")
        fs.remount("ro")
        with pytest.raises(StoreUnavailable) as info:
            store.put_bytes(b"y", "tenants/t1/datasets/b.jsonl")
        assert "read-only" in info.value.message and "'datasets/b.jsonl'" in info.value.message
        assert str(fs.path) not in info.value.message and str(tmp_path) not in info.value.message
        fs.remount("rw")
        fs.fill(0)
        with pytest.raises(StoreUnavailable, match="full") as info:
            store.put_bytes(os.urandom(64 * 1024), "tenants/t1/datasets/c.jsonl")
        assert not [p for p in fs.path.rglob("*") if p.name.endswith(".partial")]
    finally:
        fs.unmount()
