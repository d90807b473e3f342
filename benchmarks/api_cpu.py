"""The API's own CPU per request, in-process: a profiling aid next to api_throughput.py.

`benchmarks/api_throughput.py` measures requests/s over HTTP, with its load generator on the
same cores: the figure that matters, but noisy (a run-to-run spread of 10-15 % on a busy VM),
too noisy to see a change worth 3 % of a request. This script takes the network and the load
generator out of the figure: the real app (`create_app(serving=True)`, its lifespan, its
middleware, PostgreSQL, Redis for rate limits and as the broker) runs in THIS process and is
called straight through ASGI by `--clients` concurrent tasks; the process's CPU time per
request is the app's cost (its worker threads included; uvicorn's HTTP parsing, socket writes
and access log line are not in it). The same setup as api_throughput.py: a fresh PostgreSQL
database (dropped at the end), 5 tenants with a train and a val dataset each, 80 stored jobs
per tenant, limits raised out of reach (the checks still run).

    .venv/bin/python benchmarks/api_cpu.py                         # healthz, list, create
    .venv/bin/python benchmarks/api_cpu.py --phases list --rounds 4
    py-spy record --gil -f raw -o list.raw -- .venv/bin/python benchmarks/api_cpu.py --phases list

Compare two versions of the code by running each (a git worktree for the older one) in
alternation, several times: the minimum and the median of the rounds are the figures to
compare. Prints, per phase and round, the CPU ms per request, then the minimum and median of
each phase (and its median relative to `/healthz`'s, measured in the same run), then one JSON
line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for path in (HERE.parent, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import api_throughput as throughput  # noqa: E402
import httpx  # noqa: E402

from streamguard.synth import synth_examples, write_jsonl  # noqa: E402

TENANTS = 5
JOBS_PER_TENANT = 80
Scope = dict[str, Any]


async def call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]],
               body: bytes = b"") -> int:
    """One request through the app's ASGI interface; returns the status."""
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": method, "scheme": "http", "path": path,
        "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {}}
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def upload_datasets(app: Any, keys: list[str], folder: Path) -> list[dict[str, Any]]:
    refs = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://bench") as client:
        for key in keys:
            tenant_refs = {}
            for seed, (split, n) in enumerate((("train", 64), ("val", 32))):
                path = folder / f"{split}.jsonl"
                if not path.exists():
                    write_jsonl(synth_examples(n, seed=seed, id_prefix=split), path)
                response = await client.post(
                    "/v1/datasets", files={"file": (path.name, path.read_bytes())},
                    headers={"Authorization": f"Bearer {key}"})
                response.raise_for_status()
                tenant_refs[split] = {"dataset_id": response.json()["id"]}
            refs.append(tenant_refs)
    return refs


async def phase_round(app: Any, name: str, keys: list[str], refs: list[dict[str, Any]],
                      clients: int, requests: int) -> tuple[float, int]:
    """`requests` requests of phase `name` from `clients` concurrent tasks: (CPU ms per
    request, requests with an unexpected status)."""
    done = bad = 0

    async def client(i: int) -> None:
        nonlocal done, bad
        auth = [(b"host", b"bench"), (b"authorization", f"Bearer {keys[i % len(keys)]}".encode())]
        while done < requests:
            done += 1
            if name == "healthz":
                status, expected = await call(app, "GET", "/healthz", auth[:1]), 200
            elif name == "list":
                status, expected = await call(app, "GET", "/v1/jobs", auth), 200
            else:
                body = json.dumps({"name": f"bench-{i}", "datasets": refs[i % len(refs)],
                                   "config": throughput.CONFIG}).encode()
                status, expected = await call(app, "POST", "/v1/jobs", auth + [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"idempotency-key", uuid.uuid4().hex.encode())], body), 201
            bad += status != expected

    cpu0 = time.process_time()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return (time.process_time() - cpu0) / done * 1000, bad


async def run(args: argparse.Namespace, tmp: Path, db_url: str) -> dict[str, list[float]]:
    os.environ.update({
        "SG_ENV": "dev", "SG_DATA_DIR": str(tmp / "data"), "SG_DB__URL": db_url,
        "SG_REDIS__URL": throughput.REDIS_URL, "SG_BROKER__URL": throughput.REDIS_URL,
        "SG_STORAGE__URI": (tmp / "artifacts").resolve().as_uri(),
        "SG_WORKER__QUEUE": f"bench-api-cpu-{uuid.uuid4().hex[:8]}",
        "SG_API__RATE_LIMIT_PER_MINUTE": str(throughput.BENCH_RATE_LIMIT_PER_MINUTE),
        "SG_API__MAX_QUEUED_JOBS_PER_TENANT": str(throughput.BENCH_MAX_QUEUED_JOBS)})
    from api.main import create_app
    from streamguard.cli_service import create_key

    keys = [create_key(db_url, f"tenant-{i}") for i in range(TENANTS)]
    app = create_app(serving=True)  # as the server builds it: its GC tuning included
    results: dict[str, list[float]] = {}
    async with app.router.lifespan_context(app):
        refs = await upload_datasets(app, keys, tmp)
        stack = throughput.Stack(base_url="", api=None, keys=keys, refs=refs,  # type: ignore[arg-type]
                                 queue=os.environ["SG_WORKER__QUEUE"])
        throughput.store_jobs(db_url, stack, JOBS_PER_TENANT)
        for name in args.phases:
            for i in range(args.rounds):
                ms, bad = await phase_round(app, name, keys, refs, args.clients, args.requests)
                if bad:
                    raise SystemExit(f"{name}: {bad} requests got an unexpected status")
                results.setdefault(name, []).append(round(ms, 3))
                print(f"{name:<8} round {i + 1}: {ms:.3f} ms of CPU per request", flush=True)
    return results


def loop_factory() -> Any:
    """uvloop's event loop where installed, as uvicorn picks it; else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000, help="per phase and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--phases", nargs="+", choices=("healthz", "list", "create"),
                        default=["healthz", "list", "create"])
    args = parser.parse_args()
    db_url = throughput.create_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                results = runner.run(run(args, Path(tmp), db_url))
    finally:
        throughput.drop_database(db_url)
    summary: dict[str, dict[str, float]] = {
        name: {"min_ms": min(v), "median_ms": round(statistics.median(v), 3)}
        for name, v in results.items()}
    print(f"\n{args.clients} concurrent clients, {args.requests} requests per round, "
          f"{args.rounds} rounds; CPU of this process per request:")
    base = summary.get("healthz")
    for name, figures in summary.items():
        if base is not None:  # the baseline of the same run: what a request costs at least
            figures["median_vs_healthz"] = round(figures["median_ms"] / base["median_ms"], 2)
        print(f"  {name:<8} min {figures['min_ms']:.3f} ms, median {figures['median_ms']:.3f} ms"
              + (f" ({figures['median_vs_healthz']:.1f}x /healthz)" if base is not None else ""))
    print(json.dumps({"clients": args.clients, "requests": args.requests,
                      "rounds": args.rounds, "cpu_ms_per_request": results, "summary": summary,
                      "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
