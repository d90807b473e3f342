"""Service commands: `streamguard db upgrade`, `streamguard keys create` and `streamguard up`
(the embedded default).

    streamguard db upgrade                           # migrate SG_DB__URL's database to head
    streamguard keys create --tenant acme            # prints a new API key once
    streamguard up                                   # API on :8000 + one worker, then a demo job
    streamguard up --no-demo --port 8080 --data-dir /srv/streamguard

`up` needs no servers: SQLite, a file:// artifact store and Celery's filesystem broker, all
under `--data-dir`. It migrates the database, starts the API (`streamguard api`: one process
unless `--api-workers N`), ONE real Celery training worker and one inference worker (`python
-m worker.inference`: the `inference` queue of `POST /v1/jobs/{id}/predict`) as child
processes (logs in `DATA_DIR/logs/`), restarting either worker when it dies, creates a
development key for tenant `dev`, and unless `--no-demo` trains a tiny model on synthetic C
functions through the HTTP API, printing each epoch as the SSE stream delivers it. Ctrl-C (or
SIGTERM) stops the children.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import IO, Any

from streamguard.cli_api import positive_int
from streamguard.contract import TERMINAL_STATUSES
from streamguard.settings import (
    DEFAULT_DATA_DIR,
    DbSettings,
    Settings,
    StorageSettings,
    get_settings,
)

TERMINAL = {status.value for status in TERMINAL_STATUSES}
#: The worker's exit code for a failed startup check (worker/preflight.py: EX_CONFIG).
WORKER_CONFIG_EXIT = 78
DEMO_SPLITS = {"train": 1600, "val": 200, "test": 200}  # train / batch 16 = 100 steps per epoch
DEMO_CONFIG: dict[str, Any] = {"model": "tiny", "max_seq_len": 128, "tokenizer_vocab_size": 1000,
                               "batch_size": 16, "lr": 1e-3, "early_stopping_patience": 0}
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
#: A worker that exits this often within a minute is crash-looping: `up` stops restarting it.
WORKER_RESTARTS_PER_MINUTE = 5
#: The children `up` restarts when they die, and what its messages call them.
SUPERVISED = {"worker": "worker", "inference": "inference worker"}


def say(text: str = "") -> None:
    """The commands' user-facing output (stdout, flushed: it is read live)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def register(sub: Any) -> None:
    """Add `db`, `keys` and `up` to the `streamguard` subcommands."""
    db = sub.add_parser("db", help="migrate the database schema (the migrations ship inside "
                                   "the package: no alembic.ini or checkout needed)")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    p = db_sub.add_parser("upgrade", help="migrate the database to a revision (default: head)")
    p.add_argument("--revision", default="head", help="an Alembic revision id, or head")
    p.add_argument("--data-dir", default=None,
                   help="the embedded deployment's folder (default: settings, i.e. SG_DB__URL "
                        f"or {DEFAULT_DATA_DIR})")
    p.set_defaults(handler=cmd_db_upgrade)

    keys = sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = keys_sub.add_parser("create", help="create an API key for a tenant (printed once)")
    p.add_argument("--tenant", required=True, help="tenant name (created if missing)")
    p.add_argument("--data-dir", default=None,
                   help="the embedded deployment's folder (default: settings, i.e. SG_DB__URL "
                        f"or {DEFAULT_DATA_DIR})")
    p.set_defaults(handler=cmd_keys_create)

    p = sub.add_parser("up", help="run the API, one worker and one inference worker locally, "
                                  "with no servers")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR),
                   help="SQLite database, artifacts, broker folders and logs")
    p.add_argument("--no-demo", dest="demo", action="store_false",
                   help="do not upload the synthetic demo dataset or submit a demo job")
    p.add_argument("--demo-epochs", type=int, default=4, help="epochs of the demo job")
    p.add_argument("--api-workers", type=positive_int, default=1,
                   help="API worker processes [1]: SQLite takes one writer at a time, so more "
                        "mostly help a read-heavy API (dashboards, many SSE streams)")
    p.add_argument("--exit-after-demo", action="store_true",
                   help="stop the services once the demo job has finished (tests, CI)")
    p.set_defaults(handler=cmd_up)


# --- db ---------------------------------------------------------------------------------------

def cmd_db_upgrade(args: argparse.Namespace) -> int:
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    from sqlalchemy.engine import make_url

    from streamguard.db.migrate import upgrade

    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else get_settings()
    url = settings.db.url
    if url.startswith("sqlite:///"):  # SQLite makes the file, not its folder
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    upgrade(url, args.revision)
    say(f"database {make_url(url).render_as_string(hide_password=True)} migrated to "
        f"{args.revision}")
    return 0


# --- keys ---------------------------------------------------------------------------------------

def create_key(db_url: str, tenant: str) -> str:
    """Migrate the database if needed, then issue a key for `tenant`."""
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines are noise here
    # Imported here: `streamguard --help` and `streamguard train` need no database stack.
    from streamguard.db.migrate import upgrade
    from streamguard.db.session import make_engine, make_session_factory
    from streamguard.db.tenants import create_tenant_key

    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session, session.begin():
            _, key = create_tenant_key(session=session, tenant_name=tenant)
    finally:
        engine.dispose()
    return key


def cmd_keys_create(args: argparse.Namespace) -> int:
    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else get_settings()
    key = create_key(settings.db.url, args.tenant)
    say(f"API key for tenant {args.tenant!r} (shown once; store it now):")
    say(key)
    return 0


# --- up -----------------------------------------------------------------------------------------

def embedded_env(data_dir: Path) -> dict[str, str]:
    """The children's environment: this one without any SG_ variable, plus the embedded default.

    Inherited SG_ settings (a Postgres URL, Redis, S3) are dropped on purpose: `up` is the
    no-server deployment, and a half-inherited configuration would split state across two.
    Those that hold no state are passed on: the log format and level (`SG_LOG__*`) and the
    worker's metrics port (`SG_WORKER__METRICS_*`).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SG_") or k.startswith(INHERITED_SETTINGS)}
    env.update({
        "SG_ENV": "dev",
        "SG_DATA_DIR": str(data_dir),
        "SG_DB__URL": f"sqlite:///{data_dir.as_posix()}/streamguard.db",
        "SG_STORAGE__URI": (data_dir / "artifacts").as_uri(),
        "PYTHONUNBUFFERED": "1",
    })
    return env


#: SG_ variables `up` passes on to its children (embedded_env).
INHERITED_SETTINGS = ("SG_LOG__", "SG_WORKER__METRICS_")


class Services:
    """The API and worker child processes; `stop()` terminates both (SIGTERM, then SIGKILL)."""

    def __init__(self, data_dir: Path, host: str, port: int, api_workers: int = 1) -> None:
        self.data_dir, self.host, self.port = data_dir, host, port
        self.api_workers = api_workers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self._files: list[IO[bytes]] = []
        self._stopping = threading.Event()
        self._restart_lock = threading.Lock()
        self._supervised = False
        self.worker_failure: str | None = None  # set when the supervisor gave up
        self._failed = "worker"  # the process it gave up on

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, env: dict[str, str], queue: str) -> None:
        commands = {
            # `streamguard api` (streamguard/cli_api.py): one uvicorn process by default
            "api": [sys.executable, "-m", "streamguard", "api", "--host", self.host,
                    "--port", str(self.port), "--workers", str(self.api_workers)],
            # One process, one task at a time: the embedded default has one (GPU or CPU) device.
            "worker": [sys.executable, "-m", "celery", "-A", "worker.celery_app:app", "worker",
                       "--pool=solo", "--concurrency=1", "-Q", queue, "--loglevel=INFO",
                       "--without-gossip", "--without-mingle", "--without-heartbeat"],
            # Predictions in a process of their own: they never wait behind a training job.
            "inference": [sys.executable, "-m", "worker.inference", "--without-gossip",
                          "--without-mingle", "--without-heartbeat"],
        }
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        for name, cmd in commands.items():
            self.logs[name] = self.data_dir / "logs" / f"{name}.log"
            self.procs[name] = self._spawn(name, cmd, env)
        self._commands, self._env = commands, env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log_file = self.logs[name].open("ab")
        self._files.append(log_file)
        return subprocess.Popen(cmd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def supervise_worker(self) -> None:
        """Restart a worker (training or inference) whenever it exits (killed, out of memory, a
        crash) until `stop()`.

        Runs in a daemon thread once the services are up. The job a dead training worker ran
        keeps its lease until that lapses; then the new worker's sweeper re-queues it and it
        resumes from its `last` checkpoint (a dead inference worker's request answers 503 when
        its wait ends). A worker that exits WORKER_RESTARTS_PER_MINUTE times in a minute is left
        down, and `check_alive` reports it.
        """
        self._supervised = True
        exits: dict[str, list[float]] = {name: [] for name in SUPERVISED}
        while not self._stopping.wait(0.5):
            for name in SUPERVISED:
                if self.procs[name].poll() is None or not self._restart(name, exits[name]):
                    continue
                return

    def _restart(self, name: str, exits: list[float]) -> bool:
        """Start `name` again after its exit; True when giving up (`worker_failure` says why)."""
        proc, what = self.procs[name], SUPERVISED[name]
        now = time.monotonic()
        exits[:] = [t for t in exits if now - t < 60.0] + [now]
        if proc.returncode == WORKER_CONFIG_EXIT:  # misconfigured: a restart cannot help
            self.worker_failure = f"the {what} refused to start{refusal_note(self.logs[name])}"
            self._failed = name
            return True
        if len(exits) >= WORKER_RESTARTS_PER_MINUTE:
            self.worker_failure = (f"the {what} exited {len(exits)} times within a minute "
                                   f"(last exit code {proc.returncode}); see {self.logs[name]}")
            self._failed = name
            return True
        say(f"{name:<7} exited with code {proc.returncode}; restarting it"
            + (" (its job resumes from its last checkpoint once its lease lapses)"
               if name == "worker" else ""))
        with self._restart_lock:  # never a new worker once stop() began
            if self._stopping.is_set():
                return True
            self.procs[name] = self._spawn(name, self._commands[name], self._env)
        return False

    def check_alive(self) -> None:
        """Raise RuntimeError naming a child that exited, with the end of its log (a supervised
        worker only once the supervisor gave up on it)."""
        if self.worker_failure:
            raise RuntimeError(self.worker_failure + refusal_note(self.logs[self._failed]))
        for name, proc in list(self.procs.items()):
            if name in SUPERVISED and self._supervised:
                continue
            if proc.poll() is not None:
                tail = self.logs[name].read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(f"the {name} process exited with code {proc.returncode}"
                                   f"{refusal_note(self.logs[name])}; "
                                   f"end of {self.logs[name]}:\n" + "\n".join(tail))

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        import httpx

        deadline, last = time.monotonic() + timeout_s, "no answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=2.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:300]}"
            except httpx.HTTPError as exc:
                last = str(exc) or type(exc).__name__
            time.sleep(0.3)
        raise RuntimeError(f"the API was not ready at {self.base_url}/readyz after "
                           f"{timeout_s:.0f} s ({last}); see {self.logs['api']}")

    def stop(self) -> None:
        with self._restart_lock:
            self._stopping.set()  # no restarts from here on
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # Celery's warm shutdown preempts the running job at its next step (`last`
                # published, job re-queued); if that did not finish, its lease lapses and the
                # next `up` resumes it from the last checkpoint.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for log_file in self._files:
            log_file.close()


#: How a worker that refused to start (worker/preflight.py: database unreachable or not
#: migrated, store not writable, broker unreachable) begins its one stderr line.
WORKER_REFUSAL_PREFIX = "streamguard worker: refusing to start:"


def refusal_note(log: Path) -> str:
    """`: <the worker's refusal line>` when the end of `log` holds one, else ''."""
    try:
        tail = log.read_text(errors="replace").splitlines()[-50:]
    except OSError:
        return ""
    refusals = [line.strip() for line in tail if line.startswith(WORKER_REFUSAL_PREFIX)]
    return f": {refusals[-1]}" if refusals else ""


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def cmd_up(args: argparse.Namespace) -> int:
    import logging

    from streamguard.logs import configure_logging
    from streamguard.settings import get_log_settings

    # `up`'s own log lines in its children's format (SG_LOG__FORMAT=json: JSON on stderr; the
    # banner and the demo's progress stay plain text on stdout, for the person reading them).
    configure_logging(get_log_settings())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    data_dir = Path(args.data_dir).resolve()
    env = embedded_env(data_dir)
    settings = Settings(env="dev", data_dir=data_dir, db=DbSettings(url=env["SG_DB__URL"]),
                        storage=StorageSettings(uri=env["SG_STORAGE__URI"]))
    settings.ensure_dirs()
    say(f"StreamGuard (embedded: SQLite, file:// artifacts, filesystem broker) in {data_dir}")
    key = create_key(settings.db.url, "dev")  # migrates first
    services = Services(data_dir, args.host, args.port, args.api_workers)
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    with ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, previous)
        stack.callback(services.stop)
        try:
            services.start(env, settings.worker.queue)
            services.wait_ready()
            threading.Thread(target=services.supervise_worker, name="supervisor",
                             daemon=True).start()
            say(f"API     {services.base_url}  (dashboard: {services.base_url}/ui/, docs: "
                f"{services.base_url}/docs)")
            say(f"logs    {services.logs['api']}, {services.logs['worker']}, "
                f"{services.logs['inference']}")
            say(f"API key for tenant 'dev': {key}")
            say(f"        curl -H 'Authorization: Bearer {key}' {services.base_url}/v1/jobs")
            status = None
            if args.demo:
                status = run_demo(services, key, data_dir, epochs=args.demo_epochs)
            if args.exit_after_demo:
                return 0 if status not in (None, "failed") else 1
            say("serving; Ctrl-C to stop")
            while True:
                services.check_alive()
                time.sleep(0.5)
        except KeyboardInterrupt:
            say("\nstopping the API and the workers ...")
            return 0
        except RuntimeError as exc:
            say(f"streamguard up: error: {exc}")
            return 1
    return 0


# --- the demo -----------------------------------------------------------------------------------

def run_demo(services: Services, key: str, data_dir: Path, *, epochs: int) -> str | None:
    """Upload synthetic splits, submit a tiny job, print its events; returns its final status."""
    import httpx

    from streamguard.synth import synth_examples, write_jsonl

    demo_dir = data_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {key}"}
    refs: dict[str, dict[str, str]] = {}
    with httpx.Client(base_url=services.base_url, headers=headers, timeout=60.0) as client:
        for i, (split, n) in enumerate(DEMO_SPLITS.items()):
            path = demo_dir / f"{split}.jsonl"
            write_jsonl(synth_examples(n, seed=i, id_prefix=f"demo-{split}"), path)
            with path.open("rb") as fh:
                response = client.post("/v1/datasets", data={"name": f"demo-{split}"},
                                       files={"file": (path.name, fh, "application/jsonl")})
            _expect(response, 201, f"upload of {path}")
            refs[split] = {"dataset_id": response.json()["id"]}
        say(f"demo    uploaded synthetic splits {DEMO_SPLITS}")
        body = {"name": "demo", "datasets": refs, "config": {**DEMO_CONFIG, "epochs": epochs}}
        response = client.post("/v1/jobs", json=body)
        _expect(response, 201, "job submission")
        job_id = response.json()["id"]
        say(f"demo    job {job_id} submitted: tiny RoBERTa, {epochs} epoch(s); following events")
        status = follow_events(client, job_id, services)
        job = client.get(f"/v1/jobs/{job_id}").json()
        say(f"outcome {status}: {job.get('outcome_message') or ''}")
        return status


def _expect(response: Any, status: int, what: str) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{what} answered {response.status_code}: {response.text[:500]}")


def sse_messages(lines: Iterator[str]) -> Iterator[tuple[str | None, str, str]]:
    """(id, event, data) for each Server-Sent Event in a stream of lines."""
    event_id, event, data = None, "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event_id, event, "\n".join(data)
            event, data = "message", []
        elif line.startswith(":"):
            continue  # keep-alive ping
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "event":
                event = value
            elif name == "id":
                event_id = value


def follow_events(client: Any, job_id: str, services: Services) -> str | None:
    """Print the job's events until a terminal status; reconnects with Last-Event-ID."""
    import httpx

    last_id: str | None = None
    for _attempt in range(20):
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers,
                               timeout=httpx.Timeout(10.0, read=None)) as response:
                _expect(response, 200, "the event stream")
                for event_id, kind, data in sse_messages(response.iter_lines()):
                    last_id = event_id or last_id
                    payload = json.loads(data) if data else {}
                    say(format_event(kind, payload))
                    if kind == "status" and payload.get("status") in TERMINAL:
                        return str(payload["status"])
        except (httpx.TransportError, httpx.RemoteProtocolError):
            services.check_alive()
            time.sleep(1.0)
    raise RuntimeError(f"lost the event stream of job {job_id} too many times")


def format_event(kind: str, p: dict[str, Any]) -> str:
    """One human line per event."""
    if kind == "epoch":
        dist = p.get("prediction_distribution") or {}
        return (f"epoch {p.get('epoch')}  train_loss {p.get('train_loss', 0):.4f}  "
                f"val_loss {p.get('val_loss', 0):.4f}  F1 {p.get('f1', 0):.4f}  "
                f"MCC {p.get('mcc', 0):.4f}  {format_distribution(dist)}"
                + ("  (best)" if p.get("is_best") else ""))
    if kind == "warning":
        return f"WARNING epoch {p.get('epoch')}: {p.get('message')}"
    if kind == "status":
        reason = f": {p['reason']}" if p.get("reason") else ""
        return f"status  {p.get('status')}{reason}"
    if kind == "checkpoint":
        return (f"checkpoint {p.get('name')} -> epoch {p.get('epoch')} "
                f"({int(p.get('size_bytes', 0)) / 1e6:.1f} MB, "
                f"sha256 {str(p.get('sha256'))[:12]})")
    if kind == "test":
        dist = p.get("prediction_distribution") or {}
        return (f"test (best epoch {p.get('best_epoch')}): F1 {p.get('f1', 0):.4f}  "
                f"MCC {p.get('mcc', 0):.4f}  {format_distribution(dist)}")
    return f"{kind} {json.dumps(p)[:200]}"


def format_distribution(dist: dict[str, Any]) -> str:
    """`predicted vulnerable 45 (45.0%) / safe 55 (55.0%)` from a prediction_distribution."""
    vuln, safe = int(dist.get("predicted_vulnerable", 0)), int(dist.get("predicted_safe", 0))
    total = max(vuln + safe, 1)
    return (f"predicted vulnerable {vuln} ({100 * vuln / total:.1f}%) / "
            f"safe {safe} ({100 * safe / total:.1f}%)")
