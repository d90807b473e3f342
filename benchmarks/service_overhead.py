"""What the service costs on top of the trainer, measured in one run on the embedded stack.

1. Submission latency: N `POST /v1/jobs` against a real uvicorn API (SQLite, filesystem broker;
   no worker consumes, so training load does not disturb the timings); baseline in the same
   run: N `GET /healthz` on the same server. Prints p50/p99 of both and the ratio.
2. Wall time of one tiny job through the whole stack (upload, submit, a real Celery worker,
   status polled until terminal) against the same job through `streamguard train`.

    python benchmarks/service_overhead.py --submissions 200 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from streamguard.cli_service import Services, create_key, embedded_env
from streamguard.synth import synth_examples, write_jsonl

CONFIG = {"model": "tiny", "max_seq_len": 128, "tokenizer_vocab_size": 1000, "batch_size": 16,
          "lr": 1e-3, "early_stopping_patience": 0}
SPLITS = {"train": 1600, "val": 200, "test": 200}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(data_dir: Path, *, worker: bool) -> tuple[Services, str, dict[str, str]]:
    env = embedded_env(data_dir)
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    key = create_key(env["SG_DB__URL"], "bench")
    services = Services(data_dir, "127.0.0.1", free_port())
    services.start(env, "gpu" if worker else "nobody-consumes-this")
    if not worker:  # only the API matters for the latency part
        services.procs["worker"].terminate()
        services.procs.pop("worker").wait()
    services.wait_ready()
    return services, key, env


def upload(client: httpx.Client, folder: Path) -> dict[str, dict[str, str]]:
    refs = {}
    for i, (split, n) in enumerate(SPLITS.items()):
        path = folder / f"{split}.jsonl"
        if not path.exists():
            write_jsonl(synth_examples(n, seed=i, id_prefix=split), path)
        with path.open("rb") as fh:
            r = client.post("/v1/datasets", files={"file": (path.name, fh)})
        r.raise_for_status()
        refs[split] = {"dataset_id": r.json()["id"]}
    return refs


def latency(n: int, root: Path) -> dict[str, float]:
    services, key, _ = start(root / "latency", worker=False)
    try:
        with httpx.Client(base_url=services.base_url, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}) as client:
            refs = upload(client, root)
            body = {"datasets": refs, "config": {**CONFIG, "epochs": 1}}
            for _ in range(10):  # warm up both paths
                client.get("/healthz")
                client.post("/v1/jobs", json=body).raise_for_status()
            health, submit = [], []
            for _ in range(n):
                t0 = time.perf_counter()
                client.get("/healthz").raise_for_status()
                health.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                r = client.post("/v1/jobs", json=body)
                submit.append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 201, r.text
    finally:
        services.stop()
    return {"submit_p50_ms": statistics.median(submit), "submit_p99_ms": pct(submit, 0.99),
            "healthz_p50_ms": statistics.median(health), "healthz_p99_ms": pct(health, 0.99)}


def stack_vs_cli(epochs: int, root: Path) -> dict[str, float]:
    data = root / "data"
    data.mkdir(exist_ok=True)
    services, key, env = start(root / "stack", worker=True)
    try:
        with httpx.Client(base_url=services.base_url, timeout=60,
                          headers={"Authorization": f"Bearer {key}"}) as client:
            refs = upload(client, data)
            t0 = time.perf_counter()
            r = client.post("/v1/jobs", json={"datasets": refs,
                                              "config": {**CONFIG, "epochs": epochs}})
            r.raise_for_status()
            job_id = r.json()["id"]
            while True:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] not in ("queued", "running"):
                    break
                services.check_alive()
                time.sleep(0.2)
            stack_s = time.perf_counter() - t0
            if job["status"] != "completed":
                sys.exit(f"stack job ended {job['status']}: {job.get('outcome_message')}")
    finally:
        services.stop()
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**CONFIG, "epochs": epochs}.items()]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "streamguard.cli", "train", "--train",
                    str(data / "train.jsonl"), "--val", str(data / "val.jsonl"), "--test",
                    str(data / "test.jsonl"), "--output-dir", str(root / "cli"),
                    "--no-progress", *flags], check=True, env={**os.environ, **{
                        "OMP_NUM_THREADS": env["OMP_NUM_THREADS"]}},
                   stdout=subprocess.DEVNULL)
    cli_s = time.perf_counter() - t0
    return {"stack_wall_s": stack_s, "cli_wall_s": cli_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--submissions", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--skip-stack", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        lat = latency(args.submissions, root)
        print(f"POST /v1/jobs  p50 {lat['submit_p50_ms']:.1f} ms  p99 {lat['submit_p99_ms']:.1f} ms"
              f"  ({args.submissions} submissions, SQLite + filesystem broker)")
        print(f"GET /healthz   p50 {lat['healthz_p50_ms']:.1f} ms  p99 {lat['healthz_p99_ms']:.1f}"
              f" ms  (baseline, same server)")
        print(f"ratio submit/healthz p50 {lat['submit_p50_ms'] / lat['healthz_p50_ms']:.1f}")
        out = dict(lat)
        if not args.skip_stack:
            wall = stack_vs_cli(args.epochs, root)
            ratio = wall["stack_wall_s"] / wall["cli_wall_s"]
            print(f"tiny job, {args.epochs} epochs: full stack {wall['stack_wall_s']:.1f} s, "
                  f"streamguard train {wall['cli_wall_s']:.1f} s, ratio {ratio:.2f}")
            out.update(wall, stack_vs_cli_ratio=ratio)
        print(json.dumps({k: round(v, 3) for k, v in out.items()}))


if __name__ == "__main__":
    main()
