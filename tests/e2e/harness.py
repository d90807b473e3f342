"""Helpers for the end-to-end tests (tests/integration/test_e2e_*.py).

Everything here talks to REAL processes: a uvicorn API and a Celery worker started as
subprocesses (or `streamguard up`, which starts both), reached over HTTP on loopback. Nothing
is mocked; a service that does not answer is a test failure.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from streamguard.contract import TERMINAL_STATUSES

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
TERMINAL = {status.value for status in TERMINAL_STATUSES}

#: The job config of the issue. 3,000 train rows / batch 16 = 188 optimizer steps per epoch:
#: enough for the tiny from-scratch model to predict both classes at its first evaluation.
TINY_CONFIG: dict[str, Any] = {"model": "tiny", "max_seq_len": 64, "tokenizer_vocab_size": 2000,
                               "batch_size": 16, "lr": 1e-3, "epochs": 2,
                               "early_stopping_patience": 0}
SPLIT_SIZES = {"train": (3000, 1), "val": (300, 2), "test": (200, 3)}  # rows, sampling seed

#: One thread per process: 2 shared cores; more threads spin against each other.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
              "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env() -> dict[str, str]:
    """This process's environment without any SG_ variable, plus the thread limits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SG_")}
    env.update(THREAD_ENV)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def make_splits(devign: Path, out: Path) -> dict[str, Path]:
    """The issue's real Devign samples: train 3000 (seed 1), val 300 (2), test 200 (3)."""
    from tests.conftest import sample_jsonl

    out.mkdir(parents=True, exist_ok=True)
    src = {"train": devign / "train.jsonl", "val": devign / "valid.jsonl",
           "test": devign / "valid.jsonl"}
    return {split: sample_jsonl(src[split], out / f"{split}.jsonl", n, seed=seed)
            for split, (n, seed) in SPLIT_SIZES.items()}


# --- processes ----------------------------------------------------------------------------------

def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (read from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            kids.append(int(entry.name))
    return kids


class Proc:
    """A child process in its own session, its output in a log file; `stop()` ends it."""

    def __init__(self, name: str, cmd: Sequence[str], env: Mapping[str, str], log: Path,
                 *, capture_stdout: bool = False) -> None:
        self.name, self.cmd, self.log = name, list(cmd), log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._log_file: IO[bytes] = log.open("ab")
        self.lines: list[str] = []  # stdout lines, when captured
        self.proc = subprocess.Popen(
            self.cmd, env=dict(env), cwd=REPO_ROOT, start_new_session=True,
            stdout=subprocess.PIPE if capture_stdout else self._log_file,
            stderr=subprocess.STDOUT)
        self._reader: threading.Thread | None = None
        if capture_stdout:
            self._reader = threading.Thread(target=self._pump, daemon=True)
            self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._log_file.write(raw)
            self._log_file.flush()
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"the {self.name} process exited with code "
                                 f"{self.proc.returncode}; end of {self.log}:\n{self.tail()}")

    def text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def wait_for_output(self, needle: str | Callable[[str], bool], timeout_s: float) -> str:
        """The first log line containing `needle` (or matching it); fails on exit/timeout."""
        match = needle if callable(needle) else (lambda line: needle in line)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.text().splitlines():
                if match(line):
                    return line
            self.check_alive()
            time.sleep(0.3)
        raise AssertionError(f"{self.name}: no line matching {needle!r} after {timeout_s:.0f} s;"
                             f" end of {self.log}:\n{self.tail()}")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the process group, then SIGKILL it and any child that outlived it."""
        kids = child_pids(self.pid) if self.alive() else []
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + grace_s
        for kid in kids:  # e.g. `streamguard up`'s API and worker, in their own sessions
            while Path(f"/proc/{kid}").exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            if Path(f"/proc/{kid}").exists():
                os.kill(kid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout=5)
        self._log_file.close()


def dump_logs(procs: Sequence[Proc], n: int = 80) -> None:
    """Print the end of every log (pytest shows it for a failed test)."""
    for p in procs:
        print(f"\n===== {p.name} ({p.log}) =====\n{p.tail(n)}")  # noqa: T201


def wait_ready(base_url: str, procs: Sequence[Proc], timeout_s: float = 120.0) -> None:
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        for p in procs:
            p.check_alive()
        try:
            r = httpx.get(f"{base_url}/readyz", timeout=3.0)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:300]}"
        except httpx.HTTPError as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.3)
    raise AssertionError(f"{base_url}/readyz not ready after {timeout_s:.0f} s: {last}")


def api_cmd(port: int, workers: int | None = None) -> list[str]:
    """The API on loopback: one uvicorn process, or with `workers` the production launcher
    `streamguard api --workers N` (uvicorn's supervisor and N worker processes)."""
    if workers is None:
        return [str(VENV_BIN / "uvicorn"), "--factory", "api.main:serve_app",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"]
    return [sys.executable, "-m", "streamguard", "api", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--log-level", "info"]


def spawned_workers(pid: int) -> list[int]:
    """The worker processes of `streamguard api --workers N` with supervisor `pid`: its
    children started by multiprocessing's spawn (not its resource tracker)."""
    kids = []
    for kid in child_pids(pid):
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"spawn_main" in part for part in cmdline):
            kids.append(kid)
    return sorted(kids)


def worker_cmd(queue: str, node: str) -> list[str]:
    return [str(VENV_BIN / "celery"), "-A", "worker.celery_app:app", "worker", "--pool=solo",
            "--concurrency=1", "-Q", queue, "-n", node, "--loglevel=INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


# --- HTTP steps ---------------------------------------------------------------------------------

@dataclass
class Event:
    id: int
    kind: str
    payload: dict[str, Any]


def iter_sse(lines: Iterator[str], on_line: Callable[[], None]) -> Iterator[Event]:
    """Parse Server-Sent Events; `on_line` runs on every line (pings included)."""
    event_id, kind, data = None, "message", list[str]()
    for line in lines:
        on_line()
        if not line:
            if data:
                assert event_id is not None, f"an SSE message without id: {kind} {data}"
                yield Event(int(event_id), kind, json.loads("\n".join(data)))
            event_id, kind, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value
        elif name == "id":
            event_id = value


@dataclass
class Api:
    base_url: str
    key: str
    procs: list[Proc] = field(default_factory=list)  # checked while waiting

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60.0,
                            headers={"Authorization": f"Bearer {self.key}"}, **kw)

    def check_procs(self) -> None:
        for p in self.procs:
            p.check_alive()

    def upload(self, path: Path, name: str) -> dict[str, Any]:
        with self.client() as c, path.open("rb") as fh:
            r = c.post("/v1/datasets", data={"name": name},
                       files={"file": (path.name, fh, "application/x-ndjson")})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def upload_splits(self, splits: Mapping[str, Path]) -> dict[str, dict[str, str]]:
        refs = {}
        for split, path in splits.items():
            ds = self.upload(path, f"devign-{split}")
            n_rows = sum(1 for line in path.read_text().splitlines() if line)
            assert ds["stats"]["rows"] == n_rows, ds
            assert ds["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            refs[split] = {"dataset_id": ds["id"]}
        return refs

    def submit(self, refs: Mapping[str, Any], **config: Any) -> dict[str, Any]:
        body = {"name": "e2e", "datasets": dict(refs), "config": {**TINY_CONFIG, **config}}
        with self.client() as c:
            r = c.post("/v1/jobs", json=body)
        assert r.status_code == 201, r.text
        job = dict(r.json())
        assert job["status"] == "queued", job
        return job

    def get(self, path: str, **params: Any) -> Any:
        with self.client() as c:
            r = c.get(path, params=params)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.get(f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.post(f"/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
        return dict(r.json())

    def follow(self, job_id: str, timeout_s: float,
               on_event: Callable[[Event], None] | None = None) -> list[Event]:
        """Every event of the job's SSE stream until the terminal status event ends it."""
        deadline = time.monotonic() + timeout_s
        events: list[Event] = []

        def on_line() -> None:
            self.check_procs()
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id}: no terminal status after {timeout_s:.0f} s;"
                                     f" events so far: {[(e.kind, e.payload) for e in events]}")

        with self.client() as c, c.stream(
                "GET", f"/v1/jobs/{job_id}/events",
                timeout=httpx.Timeout(10.0, read=60.0)) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("text/event-stream")
            for event in iter_sse(r.iter_lines(), on_line):
                events.append(event)
                if on_event is not None:
                    on_event(event)
                if event.kind == "status" and event.payload.get("status") in TERMINAL:
                    break
            else:
                raise AssertionError(f"job {job_id}: the stream ended without a terminal "
                                     f"status: {[(e.kind, e.payload) for e in events]}")
        return events


# --- checks shared by the full-stack and the embedded flow -------------------------------------

def check_completed_run(api: Api, job_id: str, events: list[Event],
                        epochs: int) -> dict[str, Any]:
    """Events, job, metrics and checkpoints of a completed run; returns what the model check
    needs: {"job", "metrics" (epoch -> row), "best" (checkpoint row), "checkpoints"}."""
    ids = [e.id for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), f"event ids not increasing: {ids}"
    final = events[-1]
    assert final.kind == "status" and final.payload["status"] == "completed", final
    epoch_events = [e.payload for e in events if e.kind == "epoch"]
    assert [e["epoch"] for e in epoch_events] == list(range(1, epochs + 1)), epoch_events
    statuses = [e.payload["status"] for e in events if e.kind == "status"]
    assert "running" in statuses and statuses[-1] == "completed", statuses
    assert {"checkpoint"} <= {e.kind for e in events}

    job = api.job(job_id)
    assert job["status"] == "completed", job
    total = job["progress"]["total_steps"]
    assert job["progress"] == {"epoch": epochs, "epochs": epochs, "step": total,
                               "total_steps": total, "percent": 100.0}, job
    # step metrics: streamed and stored alike, one per logged step, up to the run's last step
    step_events = [e.payload["step"] for e in events if e.kind == "step"]
    steps = [row["step"] for row in api.get(f"/v1/jobs/{job_id}/steps", limit=2000)["items"]]
    assert step_events == steps and steps == sorted(set(steps)) and steps[-1] == total, steps
    assert job["best_epoch"] in range(1, epochs + 1), job
    assert job["test_metrics"] is not None and job["finished_at"] is not None, job

    page = api.get(f"/v1/jobs/{job_id}/metrics")
    rows = {row["epoch"]: row for row in page["items"]}
    assert sorted(rows) == list(range(1, epochs + 1)), page
    for epoch, row in rows.items():
        dist = row["prediction_distribution"]
        assert dist["predicted_safe"] > 0 and dist["predicted_vulnerable"] > 0, \
            f"epoch {epoch} predicted one class only: {dist}"
        assert dist["actual_safe"] + dist["actual_vulnerable"] == SPLIT_SIZES["val"][0], dist
        cm = row["confusion_matrix"]
        assert set(cm) == {"true_negative", "false_positive", "false_negative",
                           "true_positive"}, cm
        assert sum(cm.values()) == SPLIT_SIZES["val"][0], cm
        assert [cm["true_negative"] + cm["false_negative"],
                cm["false_positive"] + cm["true_positive"]] == \
            [dist["predicted_safe"], dist["predicted_vulnerable"]], (cm, dist)
        assert all(isinstance(row[k], float) for k in ("f1", "accuracy", "mcc", "lr")), row
        # the SSE epoch payload and the stored row are the same typed record
        sse = next(e for e in epoch_events if e["epoch"] == epoch)
        assert sse == {k: v for k, v in row.items() if k not in ("created_at", "updated_at")}

    checkpoints = {c["name"]: c for c in api.get(f"/v1/jobs/{job_id}/checkpoints")["items"]}
    assert set(checkpoints) == {"best", "last"}, checkpoints
    for c in checkpoints.values():
        assert c["sha256"] and len(c["sha256"]) == 64 and c["size_bytes"] > 0, c
    assert checkpoints["last"]["epoch"] == epochs
    assert checkpoints["best"]["epoch"] == job["best_epoch"]
    return {"job": job, "metrics": rows, "best": checkpoints["best"],
            "checkpoints": checkpoints}


def extract_archive(data: bytes, dest: Path) -> Path:
    """Unpack the model archive (top folder `model/`); returns the model folder."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        assert names and all(n.startswith("model/") for n in names), names
        tar.extractall(dest, filter="data")
    return dest / "model"


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def check_model_matches_worker(model_dir: Path, state_dir: Path, val_path: Path,
                               best_row: dict[str, Any], best_epoch: int) -> None:
    """Load what a user downloads and re-run the worker's validation of the best epoch.

    The same weights over the same val split (tokenized, batched and padded the way the worker
    evaluates) must give exactly the worker's confusion matrix, prediction counts and accuracy.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from streamguard.spec import parse_train_config
    from streamguard.training.data import make_loader, tokenize

    names = sorted(p.name for p in model_dir.iterdir())
    assert "config.json" in names and "model.safetensors" in names, names
    assert "training_state.pt" not in names, "the download must not carry training state"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for pt in sorted(model_dir.rglob("*.pt")):  # none expected, but any must be plain tensors
        torch.load(pt, map_location="cpu", weights_only=True)

    state = torch.load(state_dir / "training_state.pt", map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and int(state["epoch"]) == best_epoch, state.keys()
    assert {"optimizer", "scheduler", "rng", "global_step"} <= set(state)

    config = parse_train_config(TINY_CONFIG)
    rows = load_jsonl(val_path)
    split = tokenize(tokenizer, [r["func"] for r in rows], [int(r["target"]) for r in rows],
                     config.max_seq_len)
    loader = make_loader(split, config.effective_eval_batch_size,
                         pad_id=int(tokenizer.pad_token_id), shuffle=False,
                         group_by_length=config.group_by_length, seed=config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the worker: same reduction order, same logits
    try:
        model.eval()
        preds, labels = [], []
        with torch.inference_mode():
            for batch in loader:
                logits = model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits
                preds.append(logits.float().argmax(-1))
                labels.append(batch["labels"])
    finally:
        torch.set_num_threads(threads)
    p, y = torch.cat(preds).tolist(), torch.cat(labels).tolist()
    rows_cm = [[0, 0], [0, 0]]
    for actual, predicted in zip(y, p, strict=True):
        rows_cm[actual][predicted] += 1
    (tn, fp), (fn, tp) = rows_cm
    cm = {"true_negative": tn, "false_positive": fp, "false_negative": fn, "true_positive": tp}
    dist = {"predicted_safe": p.count(0), "predicted_vulnerable": p.count(1),
            "actual_safe": y.count(0), "actual_vulnerable": y.count(1)}
    accuracy = (tn + tp) / len(y)
    assert dist == best_row["prediction_distribution"], (dist, best_row)
    assert cm == best_row["confusion_matrix"], (cm, best_row)
    assert accuracy == best_row["accuracy"], (accuracy, best_row)
