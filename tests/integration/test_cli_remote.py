"""The `streamguard` client commands end to end, as real subprocesses, against a live
`streamguard up --no-demo` (a real uvicorn API and one Celery worker on SQLite, the filesystem
broker and a file:// store; tests/e2e/harness.py).

- upload -> submit -> jobs -> watch to the end (each epoch row once) -> metrics as table, JSON
  (the API's records) and CSV (parses) -> download best (sha256 verified; a wrong expected
  sha256 fails and leaves nothing) -> cancel of a second, running job (its `watch` exits 5);
- errors: a bad key, an unknown job, an unreachable server: one message, a non-zero code;
- `watch` across a server restart: `up` is stopped (SIGTERM: its worker preempts the job at a
  step) and started again on the same --data-dir and --port; both watchers (table and JSON
  lines) reconnect with Last-Event-ID, follow the resumed job to `completed` and print no
  event twice.

Run: .venv/bin/pytest tests/integration/test_cli_remote.py
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.e2e.harness import REPO_ROOT, VENV_BIN, Proc, base_env, free_port
from tests.integration.client_fixtures import jsonl, split_rows

pytestmark = pytest.mark.integration

KEY_LINE = re.compile(r"API key for tenant 'dev': (\S+)")
#: 1,600 train rows at batch 16 are 100 optimizer steps an epoch: enough for the tiny model to
#: predict both classes at its first evaluation (fewer and the collapse guard ends the job).
SPLITS = {"train": 1600, "val": 200, "test": 200}
CONFIG = ["--model", "tiny", "--max-seq-len", "64", "--tokenizer-vocab-size", "1000",
          "--batch-size", "16", "--lr", "1e-3", "--epochs", "2",
          "--early-stopping-patience", "0"]
EPOCH_ROW = re.compile(r"^\s*(\d+)\s+\d+\.\d{4}\s+\d+\.\d{4}\s")
NO_SUCH_JOB = "0" * 32


class Server:
    """`streamguard up --no-demo` on one data dir and port; `stop()` and `start()` again."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.data_dir, self.port = tmp, tmp / "sg", free_port()
        self.proc: Proc | None = None
        self.key, self.starts = "", 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        self.proc = Proc(f"streamguard-up-{self.starts}",
                         [str(VENV_BIN / "streamguard"), "up", "--no-demo", "--port",
                          str(self.port), "--data-dir", str(self.data_dir)],
                         base_env(), self.tmp / f"up-{self.starts}.log", capture_stdout=True)
        line = self.proc.wait_for_output(lambda text: KEY_LINE.search(text) is not None, 180)
        match = KEY_LINE.search(line)
        assert match is not None
        self.key = self.key or match.group(1)  # the first key stays valid across restarts

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace_s=40)
            self.proc = None

    def dump_logs(self) -> None:
        for name in ("api", "worker"):
            log = self.data_dir / "logs" / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            print(f"\n===== {name} =====\n" + "\n".join(text.splitlines()[-60:]))  # noqa: T201
        for log in sorted(self.tmp.glob("up-*.log")):
            print(f"\n===== {log.name} =====\n" + log.read_text(errors="replace")[-3000:])  # noqa: T201


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("cli_remote"))
    try:
        srv.start()
        yield srv
    except BaseException:
        srv.dump_logs()
        raise
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("cli_remote_data")
    paths = {}
    for split, n in SPLITS.items():
        paths[split] = folder / f"{split}.jsonl"
        paths[split].write_bytes(jsonl(split_rows(split, n)))
    return paths


@pytest.fixture
def on_failure_dump(server: Server) -> Iterator[None]:
    try:
        yield
    except BaseException:
        server.dump_logs()
        raise


def env(server: Server, key: str | None = None) -> dict[str, str]:
    return base_env() | {"STREAMGUARD_URL": server.url,
                         "STREAMGUARD_API_KEY": key or server.key}


def sg(server: Server, *argv: str, key: str | None = None,
       timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `streamguard ARGV` as a subprocess; never a traceback, whatever the outcome."""
    done = subprocess.run([str(VENV_BIN / "streamguard"), *argv], env=env(server, key),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert "Traceback" not in done.stderr + done.stdout, (argv, done.stderr)
    return done


class Background:
    """`streamguard ARGV` running in the background, stdout and stderr in their own files."""

    def __init__(self, server: Server, folder: Path, name: str, *argv: str) -> None:
        self.out, self.err = folder / f"{name}.out", folder / f"{name}.err"
        self._files: list[IO[bytes]] = [self.out.open("wb"), self.err.open("wb")]
        self.proc = subprocess.Popen([str(VENV_BIN / "streamguard"), *argv],
                                     env=env(server), cwd=REPO_ROOT, stdout=self._files[0],
                                     stderr=self._files[1], start_new_session=True)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"still running after {timeout_s:.0f} s; stdout:\n{self.stdout()[-3000:]}\n"
                f"stderr:\n{self.stderr()[-3000:]}") from None
        finally:
            for f in self._files:
                f.close()

    def events(self) -> list[dict[str, Any]]:
        """The JSON lines printed so far (`watch --jsonl`)."""
        return [json.loads(line) for line in self.stdout().splitlines() if line.strip()]


def wait_until(what: str, probe: Any, timeout_s: float, *procs: Background) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := probe():
            return value
        for p in procs:
            assert p.proc.poll() is None, f"{what}: the client exited early:\n{p.stderr()}"
        time.sleep(0.3)
    raise AssertionError(f"waited {timeout_s:.0f} s for {what}")


def epoch_rows(text: str) -> list[tuple[int, bool]]:
    """(epoch, replayed) of each epoch row `watch` printed."""
    return [(int(m.group(1)), line.rstrip().endswith("replayed"))
            for line in text.splitlines() if (m := EPOCH_ROW.match(line))]


def api(server: Server, path: str) -> Any:
    r = httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {server.key}"},
                  timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# --- the flow ------------------------------------------------------------------------------------

@pytest.mark.timeout(600)
@pytest.mark.usefixtures("on_failure_dump")
def test_upload_submit_watch_metrics_download(server: Server, splits: dict[str, Path],
                                              tmp_path: Path) -> None:
    done = sg(server, "datasets", "upload", str(splits["train"]), "--name", "cli-train")
    assert done.returncode == 0, done.stderr
    match = re.search(r"^dataset ([0-9a-f]{32}) 'cli-train'", done.stdout, re.M)
    assert match, done.stdout
    train_id = match.group(1)
    assert "rows 1600: vulnerable" in done.stdout and "duplicates:" in done.stdout
    assert "length (chars): min" in done.stdout
    listed = sg(server, "datasets", "list")
    assert listed.returncode == 0 and train_id in listed.stdout

    # an id is used as is, files are uploaded first; -q prints the job id alone
    done = sg(server, "submit", "--train", train_id, "--val", str(splits["val"]),
              "--test", str(splits["test"]), "--name", "cli-flow", "-q", *CONFIG)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id), done.stdout
    assert done.stderr.count("uploaded ") == 2, done.stderr
    job = api(server, f"/v1/jobs/{job_id}")
    assert job["datasets"]["train"] == {"dataset_id": train_id}
    assert job["config"]["model"] == "tiny" and job["config"]["lr"] == 0.001

    jobs = sg(server, "jobs")
    assert jobs.returncode == 0
    assert jobs.stdout.splitlines()[0].split() == ["id", "name", "status", "progress", "ETA",
                                                   "best", "outcome"]
    assert any(line.startswith(job_id) and "cli-flow" in line
               for line in jobs.stdout.splitlines()), jobs.stdout

    watched = sg(server, "watch", job_id, timeout=420)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert epoch_rows(watched.stdout) == [(1, False), (2, False)], watched.stdout
    assert watched.stdout.count("train_loss") == 1  # one header
    assert "test (best epoch" in watched.stdout and "checkpoint best <- epoch" in watched.stdout
    assert watched.stdout.rstrip().endswith(f"job {job_id} ended completed")
    # stderr is a pipe, not a terminal: no step bar and its `\r` frames (the bar itself:
    # tests/unit/test_cli_remote.py drives WatchPrinter with progress=True)
    assert "\r" not in watched.stderr and "/200" not in watched.stderr

    done_jobs = sg(server, "jobs", "--status", "completed")
    row = next(line for line in done_jobs.stdout.splitlines() if line.startswith(job_id))
    assert "100%" in row and "f1 " in row, row

    # metrics: the table, the API's JSON, and CSV that parses to the same numbers
    items = api(server, f"/v1/jobs/{job_id}/metrics")["items"]
    as_json = sg(server, "metrics", job_id, "--format", "json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == items
    as_csv = sg(server, "metrics", job_id, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for r, item in zip(rows, items, strict=True):
        assert float(r["f1"]) == item["f1"] and float(r["val_loss"]) == item["val_loss"]
        assert int(r["prediction_distribution.predicted_vulnerable"]) == \
            item["prediction_distribution"]["predicted_vulnerable"]
    as_table = sg(server, "metrics", job_id)
    assert epoch_rows(as_table.stdout) == [(1, False), (2, False)], as_table.stdout

    # download: verified and unpacked; the archive kept as is; a wrong sha256 leaves nothing
    best = next(c for c in api(server, f"/v1/jobs/{job_id}/checkpoints")["items"]
                if c["name"] == "best")
    model_dir = tmp_path / "model"
    done = sg(server, "download", job_id, "--checkpoint", "best", "--out", str(model_dir))
    assert done.returncode == 0, done.stderr
    assert f"sha256 {best['sha256']} verified" in done.stdout
    assert {"config.json", "model.safetensors"} <= {p.name for p in model_dir.iterdir()}
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]
    done = sg(server, "download", job_id, "--out", str(tmp_path / "archive"), "--archive")
    archive = tmp_path / "archive" / f"{job_id}-best.tar.gz"
    assert done.returncode == 0 and hashlib.sha256(archive.read_bytes()).hexdigest() == \
        best["sha256"]
    tampered = tmp_path / "tampered"
    done = sg(server, "download", job_id, "--out", str(tampered), "--expect-sha256", "0" * 64)
    assert done.returncode == 12, done.stderr
    assert "does not match" in done.stderr and "deleted" in done.stderr
    assert not tampered.exists()
    done = sg(server, "download", job_id, "--out", str(model_dir))  # files already there
    assert done.returncode == 2 and "--force" in done.stderr


@pytest.mark.timeout(300)
@pytest.mark.usefixtures("on_failure_dump")
def test_cancel_a_running_job_and_its_watch_exits_5(server: Server, splits: dict[str, Path],
                                                    tmp_path: Path) -> None:
    done = sg(server, "submit", "--train", str(splits["train"]), "--val", str(splits["val"]),
              "--name", "cli-cancel", "-q", *CONFIG)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    watch = Background(server, tmp_path, "watch", "watch", job_id, "--jsonl")
    wait_until("the job to run", lambda: any(
        e["kind"] == "status" and e["data"]["status"] == "running" for e in watch.events()),
        120, watch)
    done = sg(server, "cancel", job_id)
    assert done.returncode == 0, done.stderr
    assert job_id in done.stdout and ("cancel requested" in done.stdout
                                      or "cancelled" in done.stdout)
    assert watch.wait(120) == 5, watch.stderr()
    assert watch.events()[-1]["data"]["status"] == "cancelled"
    again = sg(server, "cancel", job_id)
    assert again.returncode == 2 and "request id" in again.stderr


@pytest.mark.usefixtures("on_failure_dump")
def test_errors_are_one_message_and_a_non_zero_code(server: Server) -> None:
    bad_key = sg(server, "jobs", key="sg_not-a-key")
    assert bad_key.returncode == 2
    assert bad_key.stderr.startswith("streamguard: error: unknown or revoked API key")
    assert "request id" in bad_key.stderr
    for argv in (["watch", NO_SUCH_JOB], ["metrics", NO_SUCH_JOB], ["cancel", NO_SUCH_JOB],
                 ["download", NO_SUCH_JOB, "--out", "/nonexistent/x"]):
        done = sg(server, *argv)
        assert done.returncode == 2, (argv, done.stderr)
        assert done.stderr.startswith("streamguard: error: ") and "not found" in done.stderr
        assert "(field: job_id, request id " in done.stderr
    url = f"http://127.0.0.1:{free_port()}"
    done = sg(server, "jobs", "--url", url)
    assert done.returncode == 10 and f"cannot reach the StreamGuard server at {url}" in \
        done.stderr
    done = sg(server, "submit", "--train", "missing.jsonl", "--val", NO_SUCH_JOB)
    assert done.returncode == 2 and "no such file" in done.stderr


# --- watch across a server restart -----------------------------------------------------------

@pytest.mark.timeout(900)
@pytest.mark.usefixtures("on_failure_dump")
def test_watch_follows_a_job_across_a_server_restart(server: Server, splits: dict[str, Path],
                                                     tmp_path: Path) -> None:
    done = sg(server, "submit", "--train", str(splits["train"]), "--val", str(splits["val"]),
              "--name", "cli-restart", "-q", *CONFIG, "--log-every-steps", "5")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    table = Background(server, tmp_path, "table", "watch", job_id, "--reconnect-s", "300")
    lines = Background(server, tmp_path, "lines", "watch", job_id, "--jsonl",
                       "--reconnect-s", "300")
    wait_until("step events", lambda: any(e["kind"] == "step" for e in lines.events()), 240,
               table, lines)
    wait_until("the table watcher", lambda: "status  running" in table.stdout(), 60, table)

    before = max(e["id"] for e in lines.events())
    server.stop()  # SIGTERM: the worker preempts the job at its next step
    wait_until("a reconnect attempt", lambda: "reconnecting" in lines.stderr(), 60, lines)
    time.sleep(2.0)  # a few refused attempts while nothing listens
    assert table.proc.poll() is None and lines.proc.poll() is None
    server.start()  # the same --data-dir and --port: the job resumes from its `last`

    assert lines.wait(420) == 0, lines.stderr()
    assert table.wait(60) == 0, table.stderr()

    events = lines.events()
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "an event printed twice"
    resumed = re.findall(r"reconnected after \d+ s \(Last-Event-ID (\d+)\)", lines.stderr())
    assert resumed and int(resumed[0]) >= before and int(resumed[0]) in ids, lines.stderr()
    statuses = [e["data"]["status"] for e in events if e["kind"] == "status"]
    assert statuses.count("running") >= 2 and statuses[-1] == "completed", statuses
    fresh = [e["data"]["epoch"] for e in events
             if e["kind"] == "epoch" and not e["data"]["replayed"]]
    assert sorted(set(fresh)) == [1, 2] and len(fresh) == len(set(fresh)), fresh

    out = table.stdout()
    rows = epoch_rows(out)
    assert sorted({epoch for epoch, replayed in rows if not replayed}) == [1, 2], out
    assert len([r for r in rows if not r[1]]) == 2, out
    assert "streamguard: reconnected after" in table.stderr()
    assert out.rstrip().endswith(f"job {job_id} ended completed")
