"""Scale-out (issue 10, item 8): a queue of tiny jobs drained by 1 worker, then by 2 workers.

    .venv/bin/python benchmarks/scale_out.py                    # PostgreSQL + Redis + S3 (moto)
    .venv/bin/python benchmarks/scale_out.py --stack embedded   # SQLite + filesystem broker

Each run gets a fresh stack (`service_overhead.Stack`: for `full`, a new PostgreSQL database,
its own redis-server as the Celery broker and event bus, a new moto S3 server; all stopped and
dropped at the end): one uvicorn API, then the workers, started and idle before the clock. Then
`--jobs` tiny jobs are submitted back to back, each on its own synthetic training split (so no
job reuses another's prepared data), and the run ends when every job is terminal.

Throughput is jobs / span * 3600, where the span runs from the first job's `created_at` to the
last job's `finished_at` (the database's clock: no polling of ours in it); the span the client
saw (first POST to the poll that found the last job terminal, polled every 1 s) is printed
too.

Cores: "N workers on N cores", as one worker per GPU. Every worker runs torch with
`--threads-per-worker` intra-op threads (SG_WORKER__TORCH_THREADS, default 1), so 1 worker
trains on 1 core's worth of threads and 2 workers on 2. `--threads-per-worker 0` instead splits
this machine's cores between the workers (1 worker: all cores; 2 workers: half each): what
adding a worker to a fixed machine gains, not scale-out. The API, database, broker and store
run beside the workers on the same machine in both runs, and other load on it counts against
both: compare the ratio within one run only.

Prints the figures, then one JSON line (`jobs_per_hour_1`, `jobs_per_hour_2`, `ratio`,
`target_ratio`: 1.8).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_overhead import Stack, say, stop_on_sigterm, ts  # noqa: E402

from streamguard.contract import TERMINAL_STATUSES  # noqa: E402
from streamguard.synth import synth_examples, write_jsonl  # noqa: E402

TERMINAL = {s.value for s in TERMINAL_STATUSES}
#: A tiny job: 1,600 synthetic rows, one epoch of 100 optimizer steps. Most of the default 8 jobs
#: complete; a few (by their data's seed) end `not_learning`, which skips the test split and the
#: model export. Both runs drain the same 8 jobs, which end the same way in both.
CONFIG: dict[str, Any] = {"model": "tiny", "max_seq_len": 64, "tokenizer_vocab_size": 1000,
                          "batch_size": 16, "lr": 1e-3, "early_stopping_patience": 0}
TARGET_RATIO = 1.8
POLL_S = 1.0


def make_splits(root: Path, jobs: int, train_rows: int, eval_rows: int) -> list[dict[str, Path]]:
    """Per job its own train split (seed = job number); val and test are shared."""
    root.mkdir(parents=True, exist_ok=True)
    shared = {}
    for seed, split in ((10_001, "val"), (10_002, "test")):
        shared[split] = root / f"{split}.jsonl"
        write_jsonl(synth_examples(eval_rows, seed=seed, id_prefix=split), shared[split])
    out = []
    for job in range(jobs):
        train = root / f"train-{job}.jsonl"
        write_jsonl(synth_examples(train_rows, seed=job, id_prefix=f"train{job}"), train)
        out.append({"train": train, **shared})
    return out


def drain(stack: Stack, splits: list[dict[str, Path]], config: dict[str, Any],
          timeout_s: float) -> dict[str, Any]:
    """Upload every job's data, then submit all jobs and wait until each is terminal."""
    shared = {split: {"dataset_id": stack.api.upload(path, f"bench-{split}")["id"]}
              for split, path in splits[0].items() if split != "train"}
    bodies = [{"name": f"scale-{i}", "config": config,
               "datasets": {**shared, "train": {"dataset_id": stack.api.upload(
                   s["train"], f"bench-train-{i}")["id"]}}}
              for i, s in enumerate(splits)]
    t0 = time.perf_counter()
    with stack.api.client() as client:
        ids = []
        for body in bodies:
            r = client.post("/v1/jobs", json=body)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        jobs: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout_s
        while len(jobs) < len(ids):  # one list request per poll: little load beside the workers
            time.sleep(POLL_S)
            stack.api.check_procs()
            if time.monotonic() > deadline:
                sys.exit(f"{len(ids) - len(jobs)} job(s) not terminal after {timeout_s:.0f} s")
            r = client.get("/v1/jobs", params={"limit": len(ids)})
            assert r.status_code == 200, r.text
            jobs = {j["id"]: j for j in r.json()["items"]
                    if j["id"] in ids and j["status"] in TERMINAL}
    client_span = time.perf_counter() - t0
    rows = list(jobs.values())
    start = min(ts(j["created_at"]) for j in rows)
    span = max(ts(j["finished_at"]) for j in rows) - start
    runs = sorted((ts(j["started_at"]), ts(j["finished_at"])) for j in rows)
    edges = sorted([(a, 1) for a, _ in runs] + [(b, -1) for _, b in runs])
    running = most = 0
    for _, delta in edges:
        running += delta
        most = max(most, running)
    per_worker = [sum(1 for line in w.text().splitlines()
                      if "Task worker.tasks.train_job[" in line and " succeeded in " in line)
                  for w in stack.workers]
    outcomes: dict[str, int] = {}
    for j in rows:
        outcomes[j["status"]] = outcomes.get(j["status"], 0) + 1
    return {"span_s": span, "client_span_s": client_span, "jobs": len(rows),
            "jobs_per_hour": len(rows) / span * 3600, "max_concurrent": most,
            "mean_job_s": sum(b - a for a, b in runs) / len(runs),
            "per_worker": per_worker, "outcomes": outcomes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--stack", choices=("full", "embedded"), default="full")
    p.add_argument("--jobs", type=int, default=8)
    p.add_argument("--train-rows", type=int, default=1600)
    p.add_argument("--eval-rows", type=int, default=100, help="rows of the val and test splits")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads-per-worker", type=int, default=1,
                   help="torch threads of each worker (0: this machine's cores / workers)")
    p.add_argument("--timeout-s", type=float, default=1800)
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = p.parse_args()
    if not 2 <= args.jobs <= 200:  # 200: one page of GET /v1/jobs
        p.error("--jobs must be between 2 and 200")
    stop_on_sigterm()
    cores = os.cpu_count() or 1
    config = {**CONFIG, "epochs": args.epochs}
    # the tenant's quotas must not hold jobs back: every job is queued at once
    extra_env = {"SG_API__MAX_QUEUED_JOBS_PER_TENANT": str(max(20, args.jobs)),
                 "SG_API__MAX_RUNNING_JOBS_PER_TENANT": str(max(4, args.jobs))}
    root = Path(tempfile.mkdtemp(prefix="sg-scale-"))
    results: dict[int, dict[str, Any]] = {}
    try:
        splits = make_splits(root / "splits", args.jobs, args.train_rows, args.eval_rows)
        for workers in (1, 2):
            threads = args.threads_per_worker or max(1, cores // workers)
            stack = Stack(args.stack, root / f"run{workers}", extra_env)
            try:
                stack.start_workers(workers, threads)
                r = results[workers] = drain(stack, splits, config, args.timeout_s)
            finally:
                stack.close()
            r["threads"] = threads
            say(f"{workers} worker(s) x {threads} torch thread(s): {r['jobs']} jobs in "
                f"{r['span_s']:.1f} s (client saw {r['client_span_s']:.1f} s) = "
                f"{r['jobs_per_hour']:.0f} jobs/h; mean job {r['mean_job_s']:.1f} s, at most "
                f"{r['max_concurrent']} at once, jobs per worker {r['per_worker']}, outcomes "
                f"{r['outcomes']}")
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if results[1]["outcomes"] != results[2]["outcomes"]:  # then the work differed
        say(f"WARNING: the jobs ended differently in the two runs: {results[1]['outcomes']} vs "
            f"{results[2]['outcomes']}")
    ratio = results[2]["jobs_per_hour"] / results[1]["jobs_per_hour"]
    mode = ("N workers on N cores" if args.threads_per_worker
            else f"{cores} cores split between the workers")
    say(f"scale-out ({args.stack} stack, {mode}): 2 workers / 1 worker = {ratio:.2f}x "
        f"(target >= {TARGET_RATIO})")
    say(json.dumps({
        "stack": args.stack, "jobs": args.jobs, "train_rows": args.train_rows,
        "epochs": args.epochs, "cores": cores,
        "threads_per_worker_1": results[1]["threads"],
        "threads_per_worker_2": results[2]["threads"],
        "jobs_per_hour_1": round(results[1]["jobs_per_hour"], 1),
        "jobs_per_hour_2": round(results[2]["jobs_per_hour"], 1),
        "mean_job_s_1": round(results[1]["mean_job_s"], 2),
        "mean_job_s_2": round(results[2]["mean_job_s"], 2),
        "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO}))


if __name__ == "__main__":
    main()
