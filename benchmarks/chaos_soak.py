"""Chaos soak (issue 7): load on loopback while a seeded schedule breaks things; then check.

Everything is real and local: a fresh PostgreSQL database on 127.0.0.1:5432 (created, migrated,
dropped), a redis-server of this script on its own free port (pub/sub and Celery broker; AOF on,
so a clean restart keeps the queue), one uvicorn API and 2 Celery workers with small
lease/heartbeat/sweep settings, `tiny` jobs on small synthetic datasets.

Load: submitting clients (one Idempotency-Key per job, retried with the same key on error),
a poller (GET /v1/jobs/{id}) and SSE readers (reconnecting with Last-Event-ID). Faults, seeded:
kill -9 of a worker (a replacement is started), Redis restart (stop, 2 s, start), termination
of every PostgreSQL connection to the database. Each fault window is [start, end + 5 s].

At the end the load stops, every job must reach a terminal status (bounded wait), and the
invariants are checked: one metrics row per (job, epoch), epochs consecutive; at most one
`epoch` event per (job, epoch); one terminal status event per job; each SSE stream saw strictly
increasing ids; one job per Idempotency-Key; error rate outside fault windows < 0.5 %. Prints a
summary, then one JSON line; exits 1 when an invariant fails.

    .venv/bin/python benchmarks/chaos_soak.py --seed 1 --duration-s 180
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402

from streamguard.cli_service import create_key  # noqa: E402
from streamguard.synth import synth_examples, write_jsonl  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    TERMINAL,
    Proc,
    api_cmd,
    base_env,
    free_port,
    iter_sse,
    wait_ready,
    worker_cmd,
)

PG_ADMIN_DSN = os.environ.get("STREAMGUARD_TEST_PG_ADMIN",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
LEASE_S, HEARTBEAT_S, SWEEP_S, MAX_ATTEMPTS = 6, 2, 3, 5
GRACE_S = 5.0
CONFIG = {"model": "tiny", "max_seq_len": 64, "tokenizer_vocab_size": 1000, "batch_size": 16,
          "lr": 3e-3, "epochs": 2, "early_stopping_patience": 0}
SPLITS = {"train": (1200, 11), "val": (100, 12), "test": (100, 13)}  # rows, seed
MAX_IN_FLIGHT = 4  # non-terminal jobs the clients keep at once (the tenant quota is far above)


# --- services -----------------------------------------------------------------------------------

class Redis:
    """A redis-server of this script on its own port; AOF so a clean restart keeps the queue."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        import redis

        log = (self.folder / "redis.log").open("ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)],
            stdout=log, stderr=log, start_new_session=True)
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.RedisError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
                    time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: redis flushes the AOF and exits
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def pg_exec(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []


# --- request accounting -------------------------------------------------------------------------

@dataclass
class Req:
    t0: float
    t1: float
    what: str
    ok: bool
    detail: str


@dataclass
class Stream:
    job_id: str
    ids: list[int] = field(default_factory=list)
    epochs: list[int] = field(default_factory=list)
    reconnects: int = 0
    terminal: bool = False


class Load:
    def __init__(self, base_url: str, key: str, refs: dict[str, Any], seed: int) -> None:
        self.base_url, self.key, self.refs = base_url, key, refs
        self.rng = random.Random(seed + 1000)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.reqs: list[Req] = []
        self.jobs: dict[str, str] = {}  # job id -> last status seen
        self.keys: dict[str, str | None] = {}  # Idempotency-Key -> job id (None: never confirmed)
        self.streamed: set[str] = set()
        self.streams: list[Stream] = []

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(10.0),
                            headers={"Authorization": f"Bearer {self.key}"})

    def record(self, t0: float, what: str, ok: bool, detail: str = "") -> None:
        with self.lock:
            self.reqs.append(Req(t0, time.time(), what, ok, detail))

    def call(self, c: httpx.Client, method: str, path: str, what: str, ok_codes: tuple[int, ...],
             **kw: Any) -> httpx.Response | None:
        t0 = time.time()
        try:
            r = c.request(method, path, **kw)
        except httpx.HTTPError as exc:
            self.record(t0, what, False, f"{type(exc).__name__}: {exc}"[:200])
            return None
        ok = r.status_code in ok_codes
        self.record(t0, what, ok, "" if ok else f"{r.status_code} {r.text[:200]}")
        return r if ok else None

    def in_flight(self) -> list[str]:
        with self.lock:
            return [j for j, s in self.jobs.items() if s not in TERMINAL]

    def submitter(self) -> None:
        body = {"name": "soak", "datasets": self.refs, "config": CONFIG}
        with self.client() as c:
            while not self.stop.is_set():
                if len(self.in_flight()) >= MAX_IN_FLIGHT:
                    self.stop.wait(1.0)
                    continue
                key = uuid.uuid4().hex
                with self.lock:
                    self.keys[key] = None
                while not self.stop.is_set():  # retry with the same key until it is answered
                    r = self.call(c, "POST", "/v1/jobs", "submit", (200, 201), json=body,
                                  headers={"Idempotency-Key": key})
                    if r is not None:
                        with self.lock:
                            self.keys[key] = r.json()["id"]
                            self.jobs.setdefault(r.json()["id"], r.json()["status"])
                        break
                    self.stop.wait(1.0)
                with self.lock:
                    delay = self.rng.uniform(1.0, 4.0)
                self.stop.wait(delay)

    def poller(self) -> None:
        with self.client() as c:
            while not self.stop.wait(0.5):
                live = self.in_flight()
                if not live:
                    continue
                with self.lock:
                    job_id = self.rng.choice(live)
                r = self.call(c, "GET", f"/v1/jobs/{job_id}", "poll", (200,))
                if r is not None:
                    with self.lock:
                        self.jobs[job_id] = r.json()["status"]

    def streamer(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                todo = [j for j, s in self.jobs.items()
                        if s not in TERMINAL and j not in self.streamed]
                job_id = self.rng.choice(todo) if todo else None
                if job_id is not None:
                    self.streamed.add(job_id)
            if job_id is None:
                self.stop.wait(0.5)
                continue
            stream = Stream(job_id)
            with self.lock:
                self.streams.append(stream)
            self.follow(stream)

    def follow(self, stream: Stream) -> None:
        def on_line() -> None:
            if self.stop.is_set():
                raise _Stopped

        with self.client() as c:
            while not self.stop.is_set() and not stream.terminal:
                headers = {"Last-Event-ID": str(stream.ids[-1])} if stream.ids else {}
                t0 = time.time()
                try:
                    with c.stream("GET", f"/v1/jobs/{stream.job_id}/events", headers=headers,
                                  timeout=httpx.Timeout(10.0, read=30.0)) as r:
                        if r.status_code != 200:
                            self.record(t0, "stream", False, f"{r.status_code} {r.read()[:200]!r}")
                            stream.reconnects += 1
                            self.stop.wait(1.0)
                            continue
                        self.record(t0, "stream", True)
                        for ev in iter_sse(r.iter_lines(), on_line):
                            stream.ids.append(ev.id)
                            if ev.kind == "epoch":
                                stream.epochs.append(int(ev.payload["epoch"]))
                            if ev.kind == "status" and ev.payload.get("status") in TERMINAL:
                                stream.terminal = True
                                with self.lock:
                                    self.jobs[stream.job_id] = ev.payload["status"]
                                break
                        if not stream.terminal:  # the server ended it early: resume
                            stream.reconnects += 1
                except _Stopped:
                    return
                except (httpx.HTTPError, AssertionError, ValueError) as exc:
                    self.record(time.time(), "stream-broken", False,
                                f"{type(exc).__name__}: {exc}"[:200])
                    stream.reconnects += 1
                    self.stop.wait(0.5)


class _Stopped(Exception):
    pass


# --- the soak -----------------------------------------------------------------------------------

@dataclass
class Fault:
    kind: str
    start: float
    end: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args, self.root = args, root
        self.db_name = f"streamguard_soak_{uuid.uuid4().hex[:8]}"
        base = PG_ADMIN_DSN.rsplit("/", 1)[0]
        self.dsn = f"{base}/{self.db_name}"
        self.db_url = self.dsn.replace("postgresql://", "postgresql+psycopg://", 1)
        self.redis = Redis(root / "redis")
        self.queue = f"soak-{uuid.uuid4().hex[:6]}"
        self.api: Proc | None = None
        self.workers: list[Proc] = []
        self.faults: list[Fault] = []
        self.db_created = False
        self.env: dict[str, str] = {}

    # setup / teardown
    def setup(self) -> None:
        pg_exec(PG_ADMIN_DSN, f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        from streamguard.db.migrate import upgrade

        upgrade(self.db_url)
        self.redis.start()
        self.env = base_env()
        self.env.update({
            "SG_ENV": "dev", "SG_DATA_DIR": str(self.root / "data"), "SG_DB__URL": self.db_url,
            "SG_REDIS__URL": self.redis.url(0), "SG_BROKER__URL": self.redis.url(1),
            "SG_STORAGE__URI": (self.root / "store").as_uri(), "SG_WORKER__QUEUE": self.queue,
            "SG_WORKER__WORK_DIR": str(self.root / "work"), "SG_WORKER__LEASE_S": str(LEASE_S),
            "SG_WORKER__HEARTBEAT_S": str(HEARTBEAT_S),
            "SG_WORKER__SWEEP_INTERVAL_S": str(SWEEP_S),
            "SG_WORKER__MAX_ATTEMPTS": str(MAX_ATTEMPTS),
            "SG_API__RATE_LIMIT_PER_MINUTE": "0", "SG_API__SSE_PING_S": "5"})
        for sub in ("data", "store", "work"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.key = create_key(self.db_url, "soak")
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.api = Proc("api", api_cmd(port), self.env, self.root / "logs" / "api.log")
        for _ in range(2):
            self.start_worker()
        wait_ready(self.base_url, [self.api], timeout_s=120)
        for w in self.workers:
            w.wait_for_output(lambda line: line.rstrip().endswith("ready."), 120)

    def start_worker(self) -> Proc:
        i = len(self.workers) + 1
        proc = Proc(f"worker{i}", worker_cmd(self.queue, f"w{i}-{uuid.uuid4().hex[:4]}@%h"),
                    self.env, self.root / "logs" / f"worker{i}.log")
        self.workers.append(proc)
        return proc

    def teardown(self) -> None:
        live = [w for w in self.workers if w.alive()]
        for w in live:
            os.kill(w.pid, signal.SIGTERM)
        for w in self.workers:
            try:
                w.stop(grace_s=15)
            except Exception as exc:  # noqa: BLE001 - keep cleaning up
                print(f"cleanup: {w.name}: {exc}", file=sys.stderr)
        if self.api is not None:
            try:
                self.api.stop(grace_s=10)
            except Exception as exc:  # noqa: BLE001
                print(f"cleanup: api: {exc}", file=sys.stderr)
        self.redis.stop()
        if self.db_created:
            try:
                pg_exec(PG_ADMIN_DSN, f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except psycopg.Error as exc:
                print(f"cleanup: drop database {self.db_name}: {exc}", file=sys.stderr)

    def upload(self) -> dict[str, Any]:
        refs = {}
        with httpx.Client(base_url=self.base_url, timeout=60,
                          headers={"Authorization": f"Bearer {self.key}"}) as c:
            for split, (n, seed) in SPLITS.items():
                path = self.root / f"{split}.jsonl"
                write_jsonl(synth_examples(n, seed=seed, id_prefix=split), path)
                with path.open("rb") as fh:
                    r = c.post("/v1/datasets", data={"name": split},
                               files={"file": (path.name, fh, "application/x-ndjson")})
                r.raise_for_status()
                refs[split] = {"dataset_id": r.json()["id"]}
        return refs

    # faults
    def running_on(self, pid: int) -> list[str]:
        rows = pg_exec(self.dsn, "SELECT id, lease_owner FROM jobs WHERE status = 'running'")
        return [j for j, owner in rows if owner and owner.rsplit(":", 1)[-1] == str(pid)]

    def kill_worker(self, rng: random.Random) -> Fault:
        live = [w for w in self.workers if w.alive()]
        busy = [w for w in live if self.running_on(w.pid)]
        victim = rng.choice(busy or live)
        jobs = self.running_on(victim.pid)
        fault = Fault("kill_worker", time.time(), detail={"worker": victim.name, "jobs": jobs})
        os.killpg(victim.pid, signal.SIGKILL)
        victim.proc.wait(timeout=10)
        new = self.start_worker()
        new.wait_for_output(lambda line: line.rstrip().endswith("ready."), 120)
        fault.detail["replacement"] = new.name
        fault.end = time.time()
        return fault

    def restart_redis(self) -> Fault:
        fault = Fault("restart_redis", time.time())
        self.redis.stop()
        time.sleep(2.0)
        self.redis.start()
        fault.end = time.time()
        return fault

    def terminate_pg(self) -> Fault:
        fault = Fault("terminate_pg", time.time())
        rows = pg_exec(PG_ADMIN_DSN, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = %s AND pid <> pg_backend_pid()", (self.db_name,))
        fault.detail["terminated"] = sum(1 for (ok,) in rows if ok)
        fault.end = time.time()
        return fault

    def chaos(self, stop: threading.Event, t_end: float) -> None:
        rng = random.Random(self.args.seed)
        kinds: list[str] = []
        if stop.wait(rng.uniform(12, 18)):
            return
        while time.time() < t_end - 10 and not stop.is_set():
            if not kinds:
                kinds = ["kill_worker", "restart_redis", "terminate_pg"]
                rng.shuffle(kinds)
            kind = kinds.pop()
            try:
                fault = (self.kill_worker(rng) if kind == "kill_worker" else
                         self.restart_redis() if kind == "restart_redis" else self.terminate_pg())
            except Exception as exc:  # noqa: BLE001 - a fault that could not be made is reported
                fault = Fault(kind, time.time(), time.time(), {"error": repr(exc)[:300]})
            self.faults.append(fault)
            print(f"  t+{fault.start - self.t_start:6.1f}s fault {fault.kind} "
                  f"({fault.end - fault.start:.1f} s) {fault.detail}", flush=True)
            if stop.wait(rng.uniform(15, 25)):
                return

    # run
    def run(self) -> int:
        args = self.args
        t_setup = time.time()
        self.setup()
        refs = self.upload()
        print(f"stack up in {time.time() - t_setup:.1f} s (db {self.db_name}, redis :"
              f"{self.redis.port}, logs {self.root / 'logs'})", flush=True)
        load = Load(self.base_url, self.key, refs, args.seed)
        self.t_start = time.time()
        t_end = self.t_start + args.duration_s
        threads = ([threading.Thread(target=load.submitter, daemon=True)
                    for _ in range(args.submitters)]
                   + [threading.Thread(target=load.poller, daemon=True)]
                   + [threading.Thread(target=load.streamer, daemon=True)
                      for _ in range(args.streams)])
        chaos_stop = threading.Event()
        chaos = threading.Thread(target=self.chaos, args=(chaos_stop, t_end), daemon=True)
        for t in [*threads, chaos]:
            t.start()
        while time.time() < t_end:
            time.sleep(1.0)
            assert self.api is not None
            self.api.check_alive()
        chaos_stop.set()
        chaos.join(timeout=180)
        load.stop.set()
        for t in threads:
            t.join(timeout=40)
        t_load_end = time.time()

        # settle: every job (in the database, not only those the clients know) terminal
        deadline = time.monotonic() + args.settle_s
        while time.monotonic() < deadline:
            rows = pg_exec(self.dsn, "SELECT status FROM jobs")
            if all(s in TERMINAL for (s,) in rows):
                break
            time.sleep(2.0)
        settle_s = time.time() - t_load_end
        return self.report(load, settle_s)

    def report(self, load: Load, settle_s: float) -> int:
        failures: list[str] = []
        jobs = pg_exec(self.dsn, "SELECT id, status, attempts, total_epochs, idempotency_key, "
                       "outcome_message FROM jobs")
        by_status = Counter(s for _, s, *_ in jobs)
        not_terminal = [j for j, s, *_ in jobs if s not in TERMINAL]
        if not_terminal:
            failures.append(f"{len(not_terminal)} jobs not terminal after {settle_s:.0f} s: "
                            f"{not_terminal[:5]}")
        # metrics: one row per (job, epoch), epochs 1..n consecutive
        metric_rows = pg_exec(self.dsn, "SELECT job_id, epoch FROM epoch_metrics")
        per_job: dict[str, list[int]] = defaultdict(list)
        for job_id, epoch in metric_rows:
            per_job[job_id].append(int(epoch))
        bad_metrics = {j: sorted(e) for j, e in per_job.items()
                       if sorted(e) != list(range(1, len(e) + 1))}
        completed = {j: total for j, s, _, total, *_ in jobs if s == "completed"}
        missing = {j: sorted(per_job.get(j, [])) for j, total in completed.items()
                   if sorted(per_job.get(j, [])) != list(range(1, total + 1))}
        if bad_metrics or missing:
            failures.append(f"metrics rows not one per consecutive epoch: "
                            f"{list({**bad_metrics, **missing}.items())[:5]}")
        # events: at most one `epoch` event per (job, epoch); one terminal status event per job
        dup_epochs = pg_exec(self.dsn, "SELECT job_id, payload->>'epoch', count(*) FROM "
                             "job_events WHERE kind = 'epoch' GROUP BY 1, 2 HAVING count(*) > 1")
        if dup_epochs:
            failures.append(f"duplicate epoch events: {dup_epochs[:5]}")
        terminal_events = Counter(j for (j,) in pg_exec(
            self.dsn, "SELECT job_id FROM job_events WHERE kind = 'status' AND "
            "payload->>'status' = ANY(%s)", (sorted(TERMINAL),)))
        bad_terminal = [j for j, s, *_ in jobs if s in TERMINAL and terminal_events[j] != 1]
        if bad_terminal:
            failures.append(f"jobs without exactly one terminal status event: {bad_terminal[:5]}")
        # idempotency: one job per key; every job the API created was answered to a client
        keys = Counter(k for _, _, _, _, k, _ in jobs)
        if any(n > 1 for k, n in keys.items() if k):
            failures.append("an Idempotency-Key has more than one job")
        answered = {j for j in load.keys.values() if j}
        unanswered_jobs = [j for j, *_ in jobs if j not in answered]
        # SSE streams: strictly increasing ids, no epoch twice
        bad_streams = [s.job_id for s in load.streams
                       if any(b <= a for a, b in zip(s.ids, s.ids[1:], strict=False))
                       or len(set(s.epochs)) != len(s.epochs)]
        if bad_streams:
            failures.append(f"SSE streams with repeated/decreasing ids or epochs: {bad_streams}")
        # requests inside / outside fault windows
        windows = [(f.start, f.end + GRACE_S) for f in self.faults]

        def inside(r: Req) -> bool:
            return any(r.t0 <= b and r.t1 >= a for a, b in windows)

        total = len(load.reqs)
        err_in = [r for r in load.reqs if not r.ok and inside(r)]
        err_out = [r for r in load.reqs if not r.ok and not inside(r)]
        n_out = sum(1 for r in load.reqs if not inside(r))
        rate_out = len(err_out) / n_out if n_out else 0.0
        if rate_out >= 0.005:
            failures.append(f"error rate outside fault windows {rate_out:.2%} >= 0.5 %")
        # worker recovery: kill -> next `running` transition of a job that ran on the victim
        recoveries: list[dict[str, Any]] = []
        for f in self.faults:
            if f.kind != "kill_worker" or "jobs" not in f.detail:
                continue
            per = {}
            for job_id in f.detail["jobs"]:
                rows = pg_exec(self.dsn, "SELECT min(created_at) FROM job_transitions WHERE "
                               "job_id = %s AND to_status = 'running' AND created_at > "
                               "to_timestamp(%s)", (job_id, f.start))
                t = rows[0][0] if rows else None
                per[job_id] = round(t.timestamp() - f.start, 1) if t is not None else None
            recoveries.append({"t": round(f.start - self.t_start, 1), "worker": f.detail["worker"],
                               "jobs": per})
        rec_values = [v for r in recoveries for v in r["jobs"].values() if v is not None]
        unrecovered = [j for r in recoveries for j, v in r["jobs"].items() if v is None]
        attempts = Counter(a for _, _, a, *_ in jobs)
        fault_counts = Counter(f.kind for f in self.faults)
        fault_errors = [f"{f.kind}: {f.detail['error']}" for f in self.faults
                        if "error" in f.detail]

        print("\n=== chaos soak summary ===")
        print(f"seed {self.args.seed}, load {self.args.duration_s:.0f} s, settle {settle_s:.1f} s;"
              f" workers started {len(self.workers)}")
        print(f"faults: {dict(fault_counts)}"
              + (f"; could not be made: {fault_errors}" if fault_errors else ""))
        print(f"jobs submitted {len(jobs)} (keys answered {len(answered)}, unanswered jobs "
              f"{len(unanswered_jobs)}); by status {dict(by_status)}; attempts {dict(attempts)}")
        for j, s, _, _, _, msg in jobs:
            if s not in ("completed",):
                print(f"  job {j} {s}: {msg}")
        print(f"metrics rows {len(metric_rows)}; duplicate epoch events {len(dup_epochs)}; "
              f"jobs with != 1 terminal event {len(bad_terminal)}")
        events_seen = sum(len(s.ids) for s in load.streams)
        print(f"SSE streams {len(load.streams)}, events seen {events_seen}, "
              f"reconnects {sum(s.reconnects for s in load.streams)}, bad {len(bad_streams)}")
        print(f"requests {total}: errors inside fault windows {len(err_in)}, outside "
              f"{len(err_out)} of {n_out} ({rate_out:.2%}; target < 0.5 %)")
        for r in err_out[:10]:
            print(f"  outside-window error t+{r.t0 - self.t_start:.1f}s {r.what}: {r.detail}")
        by_what = Counter(r.what for r in err_in)
        if by_what:
            print(f"  inside-window errors by request: {dict(by_what)}")
        for r in recoveries:
            print(f"worker kill at t+{r['t']}s ({r['worker']}): recovery s per job {r['jobs']}")
        if unrecovered:
            failures.append(f"jobs of a killed worker never running again: {unrecovered}")
        print("INVARIANTS " + ("OK" if not failures else "FAILED:"))
        for f in failures:
            print(f"  - {f}")
        figures = {
            "seed": self.args.seed, "duration_s": self.args.duration_s,
            "settle_s": round(settle_s, 1), "faults": dict(fault_counts),
            "jobs_submitted": len(jobs), "jobs_by_status": dict(by_status),
            "all_terminal": not not_terminal, "metrics_rows": len(metric_rows),
            "duplicate_epoch_events": len(dup_epochs), "bad_sse_streams": len(bad_streams),
            "sse_streams": len(load.streams), "requests": total,
            "errors_in_windows": len(err_in), "errors_outside": len(err_out),
            "error_rate_outside": round(rate_out, 5),
            "recovery_s": rec_values,
            "recovery_max_s": max(rec_values) if rec_values else None,
            "invariants_ok": not failures,
        }
        print(json.dumps(figures))
        return 0 if not failures else 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration-s", type=float, default=180.0)
    p.add_argument("--settle-s", type=float, default=240.0)
    p.add_argument("--submitters", type=int, default=2)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="sg-soak-"))
    soak = Soak(args, root)
    rc = 1
    try:
        rc = soak.run()
    finally:
        soak.teardown()
        if args.keep or rc != 0:
            print(f"logs kept in {root / 'logs'}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
