"""API throughput at 50 concurrent clients on the PostgreSQL stack (issue 10, item 7).

Starts the real stack on this machine the way tests/e2e/harness.py does: a fresh PostgreSQL
database (created on 127.0.0.1:5432, migrated, dropped at the end), Redis for events, rate limits
and as the Celery broker (a queue of this run's own, deleted at the end; no worker consumes it,
so submitted jobs stay queued), a local artifact store, and the real API started the production
way, `streamguard api --workers N` (`--api-workers`, default 1: one process, as before). It
creates tenants with API keys, uploads a train and a val dataset per tenant, stores a few
hundred jobs across the tenants, then drives `--clients` concurrent clients (httpx async, one
connection each, the tenants' keys spread over them) for `--duration-s` per phase, after
`--warmup-s` of the same load that is not counted:

1. `GET /healthz`          the baseline: same server, same run, no database, no auth;
2. `GET /v1/jobs`          the first page (`--page-size`, default the API's 50) of a tenant
                           holding `--jobs-per-tenant` jobs;
3. `POST /v1/jobs`         a valid spec with a fresh Idempotency-Key every time (201 expected).

The per-key rate limit and the per-tenant queued-job quota would throttle such a load, so they
are raised for the benchmark through the environment (`SG_API__RATE_LIMIT_PER_MINUTE`,
`SG_API__MAX_QUEUED_JOBS_PER_TENANT`); both checks still run on every request (the token bucket
in Redis, the quota count under the tenant lock), only their limits are out of reach. The
output says so.

Prints requests/s, p50 and p99 per phase, the ratios to /healthz and the API's CPU time per
request (user + system over the phase of the launcher and every process under it, i.e. all its
worker processes, divided by the requests: what the server spends, whatever else runs on the
machine), then one JSON line (`api_workers`, `healthz_rps`, `list_rps`, `list_rps_ratio`,
`list_p99_ratio`, `create_rps`, `create_rps_ratio`, `create_p99_ratio`, the targets and whether
each is met, the API's CPU per request, the machine's load). Exits 1 when a phase saw
unexpected statuses.

    .venv/bin/python benchmarks/api_throughput.py              # 10 s per phase, 50 clients
    .venv/bin/python benchmarks/api_throughput.py --duration-s 3 --warmup-s 1   # a quick look
    .venv/bin/python benchmarks/api_throughput.py --api-env SG_API__THREADS=6   # API settings
    .venv/bin/python benchmarks/api_throughput.py --api-workers 2   # two API processes

Targets (issue 10): GET /v1/jobs >= 50 % of /healthz's requests/s, POST /v1/jobs >= 30 %,
each with a p99 at most 5x /healthz's p99.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402

from streamguard.cli_service import create_key  # noqa: E402
from streamguard.synth import synth_examples, write_jsonl  # noqa: E402
from tests.e2e.harness import Proc, api_cmd, base_env, free_port, wait_ready  # noqa: E402

PG_ADMIN_DSN = os.environ.get("STREAMGUARD_TEST_PG_ADMIN",
                              "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("STREAMGUARD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
CONFIG = {"model": "tiny", "epochs": 2, "batch_size": 8, "max_seq_len": 64}
#: Limits raised for the benchmark (the checks still run; the limits are out of reach).
BENCH_RATE_LIMIT_PER_MINUTE = 100_000_000
BENCH_MAX_QUEUED_JOBS = 10_000_000
TARGETS = {"list_rps_ratio_min": 0.5, "create_rps_ratio_min": 0.3, "p99_ratio_max": 5.0}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def process_tree(pid: int) -> list[int]:
    """`pid` and every process under it (each thread's `children` list in /proc)."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        try:
            tasks = list(Path(f"/proc/{current}/task").iterdir())
        except OSError:
            continue  # gone meanwhile
        for task in tasks:
            try:
                todo.extend(int(kid) for kid in (task / "children").read_text().split())
            except OSError:
                continue
    return pids


def cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of a process and all the processes under it (their
    threads included): the API launcher and its worker processes."""
    total = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


# --- the stack ----------------------------------------------------------------------------------

@dataclass
class Stack:
    base_url: str
    api: Proc
    keys: list[str]  # one per tenant
    refs: list[dict[str, Any]]  # per tenant: {"train": {"dataset_id"}, "val": {...}}
    queue: str


def create_database() -> str:
    name = f"streamguard_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_api(tmp: Path, db_url: str, queue: str, env_extra: dict[str, str],
              log: Path, workers: int) -> tuple[Proc, str]:
    env = base_env()
    env.update({
        "SG_ENV": "dev",
        "SG_DATA_DIR": str(tmp / "data"),
        "SG_DB__URL": db_url,
        "SG_REDIS__URL": REDIS_URL,
        "SG_BROKER__URL": REDIS_URL,
        "SG_STORAGE__URI": (tmp / "artifacts").resolve().as_uri(),
        "SG_WORKER__QUEUE": queue,
        "SG_API__RATE_LIMIT_PER_MINUTE": str(BENCH_RATE_LIMIT_PER_MINUTE),
        "SG_API__MAX_QUEUED_JOBS_PER_TENANT": str(BENCH_MAX_QUEUED_JOBS),
        **env_extra,
    })
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    api = Proc("api", api_cmd(port, workers=workers), env, log)
    wait_ready(base_url, [api])
    return api, base_url


def upload_datasets(base_url: str, key: str, folder: Path) -> dict[str, Any]:
    refs = {}
    with httpx.Client(base_url=base_url, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as client:
        for seed, (split, n) in enumerate((("train", 64), ("val", 32))):
            path = folder / f"{split}.jsonl"
            if not path.exists():
                write_jsonl(synth_examples(n, seed=seed, id_prefix=split), path)
            with path.open("rb") as fh:
                r = client.post("/v1/datasets", files={"file": (path.name, fh)})
            r.raise_for_status()
            refs[split] = {"dataset_id": r.json()["id"]}
    return refs


def store_jobs(db_url: str, stack: Stack, per_tenant: int) -> None:
    """`per_tenant` jobs for each tenant, inserted as the API's submit would (spec, transition,
    event), a tenth of them cancelled so the page holds more than one status."""
    from api.schemas import JobCreate
    from api.services.jobs import request_hash
    from streamguard.db import jobs as jobs_repo
    from streamguard.db import tenants
    from streamguard.db.session import make_engine, make_session_factory

    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            for key, refs in zip(stack.keys, stack.refs, strict=True):
                tenant = tenants.authenticate(session=session, key=key)
                assert tenant is not None
                for i in range(per_tenant):
                    body = JobCreate.model_validate(
                        {"name": f"stored-{i}", "datasets": refs, "config": CONFIG})
                    job = jobs_repo.create_job(
                        session=session, tenant_id=tenant.id, spec=body.model_dump(mode="json"),
                        total_epochs=body.config.epochs, name=body.name,
                        idempotency_key=f"stored-{i}", request_hash=request_hash(body))
                    if i % 10 == 0:
                        jobs_repo.request_cancel(session=session, job=job)
                session.commit()
    finally:
        engine.dispose()


# --- load ---------------------------------------------------------------------------------------

@dataclass
class Phase:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    duration_s: float = 0.0
    server_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies_ms) / self.duration_s if self.duration_s else 0.0

    def p(self, q: float) -> float:
        return pct(self.latencies_ms, q) if self.latencies_ms else float("nan")


Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def drive(base_url: str, stack: Stack, clients: int, request: Request, expected: int,
                warmup_s: float, duration_s: float, name: str) -> Phase:
    """`clients` loops, each on its own connection, sending `request` back to back; only the
    requests that start and end inside the measured window count."""
    phase = Phase(name)
    measuring = False
    t_start = t_end = 0.0

    async def client_loop(i: int) -> None:
        key = stack.keys[i % len(stack.keys)]
        async with httpx.AsyncClient(
                base_url=base_url, timeout=60.0,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                headers={"Authorization": f"Bearer {key}"}) as client:
            while True:
                now = time.perf_counter()
                if measuring and now >= t_end:
                    return
                t0 = time.perf_counter()
                try:
                    response = await request(client, i)
                except httpx.HTTPError as exc:
                    if measuring:
                        phase.errors[type(exc).__name__] += 1
                    continue
                t1 = time.perf_counter()
                if measuring and t0 >= t_start and t1 <= t_end:
                    phase.statuses[response.status_code] += 1
                    if response.status_code == expected:
                        phase.latencies_ms.append((t1 - t0) * 1000)
                    else:
                        phase.errors[f"HTTP {response.status_code}: {response.text[:200]}"] += 1

    tasks = [asyncio.create_task(client_loop(i)) for i in range(clients)]
    await asyncio.sleep(warmup_s)
    cpu0 = cpu_s(stack.api.pid)
    t_start = time.perf_counter()
    t_end = t_start + duration_s
    measuring = True
    await asyncio.sleep(duration_s)
    cpu1 = cpu_s(stack.api.pid)
    await asyncio.gather(*tasks)
    phase.duration_s = duration_s
    phase.server_cpu_s = cpu1 - cpu0
    return phase


async def run_phases(stack: Stack, args: argparse.Namespace) -> dict[str, Phase]:
    page = {"limit": args.page_size} if args.page_size else {}

    async def healthz(client: httpx.AsyncClient, _i: int) -> httpx.Response:
        return await client.get("/healthz")

    async def list_jobs(client: httpx.AsyncClient, _i: int) -> httpx.Response:
        return await client.get("/v1/jobs", params=page)

    async def create_job(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"name": f"bench-{i}", "datasets": stack.refs[i % len(stack.refs)],
                "config": CONFIG}
        return await client.post("/v1/jobs", json=body,
                                 headers={"Idempotency-Key": uuid.uuid4().hex})

    phases = {}
    for name, request, expected in (("healthz", healthz, 200), ("list", list_jobs, 200),
                                    ("create", create_job, 201)):
        if name not in args.phases:
            continue
        phases[name] = await drive(stack.base_url, stack, args.clients, request, expected,
                                   args.warmup_s, args.duration_s, name)
        stack.api.check_alive()
    return phases


# --- report -------------------------------------------------------------------------------------

LABELS = {"healthz": "GET /healthz", "list": "GET /v1/jobs", "create": "POST /v1/jobs"}


def report(phases: dict[str, Phase], args: argparse.Namespace, total_jobs: int) -> dict[str, Any]:
    def ratio(a: float, b: float) -> float:
        return a / b if b and a == a and b == b else float("nan")

    missing = Phase("not run", duration_s=1.0)
    phases = {name: phases.get(name, missing) for name in LABELS}
    base = phases["healthz"]
    print(f"\n{args.clients} concurrent clients, {args.duration_s:g} s per phase after "
          f"{args.warmup_s:g} s warm-up; {args.tenants} tenants, {total_jobs} jobs stored "
          f"before the list phase; `streamguard api --workers {args.api_workers}` "
          f"({args.api_workers} API worker process{'es' if args.api_workers > 1 else ''}); "
          f"PostgreSQL, Redis (rate limits, broker).")
    print(f"Limits raised for the benchmark via the environment (the checks still run): "
          f"SG_API__RATE_LIMIT_PER_MINUTE={BENCH_RATE_LIMIT_PER_MINUTE}, "
          f"SG_API__MAX_QUEUED_JOBS_PER_TENANT={BENCH_MAX_QUEUED_JOBS}"
          + "".join(f", {item}" for item in args.api_env) + ".")
    load = os.getloadavg()
    print(f"Machine: {os.cpu_count()} CPUs, load average {load[0]:.1f} at the end (above the "
          "CPU count: other processes competed, the figures are inflated).\n")
    print(f"{'phase':<16}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'rps/hz':>8}{'p99/hz':>8}"
          f"{'API CPU ms/req':>16}{'errors':>8}")
    for name, ph in phases.items():
        cpu_ms = ph.server_cpu_s * 1000 / max(1, sum(ph.statuses.values()))
        print(f"{LABELS[name]:<16}{ph.rps:>9.1f}{ph.p(0.5):>9.1f}{ph.p(0.99):>9.1f}"
              f"{ratio(ph.rps, base.rps):>8.2f}{ratio(ph.p(0.99), base.p(0.99)):>8.2f}"
              f"{cpu_ms:>16.2f}"
              f"{sum(ph.errors.values()):>8}")
        for error, n in ph.errors.most_common(3):
            print(f"    {n} x {error}")
    lst, crt = phases["list"], phases["create"]
    out: dict[str, Any] = {
        "api_workers": args.api_workers, "clients": args.clients, "duration_s": args.duration_s,
        "healthz_rps": base.rps, "healthz_p50_ms": base.p(0.5), "healthz_p99_ms": base.p(0.99),
        "list_rps": lst.rps, "list_p50_ms": lst.p(0.5), "list_p99_ms": lst.p(0.99),
        "list_rps_ratio": ratio(lst.rps, base.rps),
        "list_p99_ratio": ratio(lst.p(0.99), base.p(0.99)),
        "create_rps": crt.rps, "create_p50_ms": crt.p(0.5), "create_p99_ms": crt.p(0.99),
        "create_rps_ratio": ratio(crt.rps, base.rps),
        "create_p99_ratio": ratio(crt.p(0.99), base.p(0.99)),
        "api_cpu_ms_per_request": {
            name: ph.server_cpu_s * 1000 / max(1, sum(ph.statuses.values()))
            for name, ph in phases.items()},
        "errors": {name: sum(ph.errors.values()) for name, ph in phases.items()},
        "api_env": list(args.api_env), "cpus": os.cpu_count(), "load_average": load[0],
    }
    met = {
        "list_rps": out["list_rps_ratio"] >= TARGETS["list_rps_ratio_min"],
        "list_p99": out["list_p99_ratio"] <= TARGETS["p99_ratio_max"],
        "create_rps": out["create_rps_ratio"] >= TARGETS["create_rps_ratio_min"],
        "create_p99": out["create_p99_ratio"] <= TARGETS["p99_ratio_max"],
    }
    print("\ntargets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in met.items()))
    out["targets"] = TARGETS
    out["targets_met"] = met

    def clean(value: Any) -> Any:  # strict JSON: a phase not run gives null, never NaN
        if isinstance(value, float):
            return None if value != value else round(value, 3)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    return {k: clean(v) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--warmup-s", type=float, default=2.0)
    p.add_argument("--tenants", type=int, default=5)
    p.add_argument("--jobs-per-tenant", type=int, default=80)
    p.add_argument("--page-size", type=int, default=0, help="0: the API's default page size")
    p.add_argument("--phases", nargs="+", choices=list(LABELS), default=list(LABELS),
                   help="run only these (a profiling aid; the ratios need healthz)")
    p.add_argument("--api-workers", type=int, default=1,
                   help="API worker processes (`streamguard api --workers N`) [1]")
    p.add_argument("--api-log", help="keep the API process's log in this file")
    p.add_argument("--api-env", action="append", default=[], metavar="SG_X=V",
                   help="extra environment for the API process (e.g. pool sizes)")
    args = p.parse_args()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    env_extra = dict(item.split("=", 1) for item in args.api_env)

    queue = f"bench-api-{uuid.uuid4().hex[:8]}"
    db_url = create_database()
    api: Proc | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="sg-bench-api-") as tmp_name:
            tmp = Path(tmp_name)
            keys = [create_key(db_url, f"bench-{i}") for i in range(args.tenants)]
            log = Path(args.api_log) if args.api_log else tmp / "logs" / "api.log"
            api, base_url = start_api(tmp, db_url, queue, env_extra, log, args.api_workers)
            refs = [upload_datasets(base_url, key, tmp) for key in keys]
            stack = Stack(base_url, api, keys, refs, queue)
            store_jobs(db_url, stack, args.jobs_per_tenant)
            print(f"API launcher {api.pid} ({args.api_workers} worker process(es)) at "
                  f"{base_url}; load starts", flush=True)
            try:
                phases = asyncio.run(run_phases(stack, args))
            finally:
                api.stop()
            out = report(phases, args, args.tenants * args.jobs_per_tenant)
    finally:
        if api is not None and api.alive():
            api.stop()
        drop_database(db_url)
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(queue, f"_kombu.binding.{queue}")
        client.close()
    print(json.dumps(out))
    if any(out["errors"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
