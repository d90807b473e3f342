"""Deployment settings: where StreamGuard runs (database, Redis, broker, storage, worker, API).

This is the only module that reads the environment. Every variable is `SG_`-prefixed and nested
sections use `__`, e.g.::

    SG_ENV=prod SG_DB__URL=postgresql+psycopg://sg:$DB_PASSWORD@db/streamguard \
    SG_REDIS__URL=redis://:$REDIS_PASSWORD@redis:6379/0 SG_STORAGE__URI=s3://bucket/prefix \
    streamguard up

`SG_ENV=prod` refuses missing, short and well-known passwords in every URL setting
(`url_secret_problem`) and in the secret settings (`secret_problem`: `trackers.mlflow_password`,
`trackers.mlflow_token`, held as `SecretStr`), naming the setting and never the secret.

Per-job hyperparameters are *not* here: they are `streamguard.spec.TrainConfig`. Read settings
through `get_settings()` (cached) so tests can override the dependency or clear the cache.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Passwords that ship with images, examples and this repository's docker-compose.yml; refused
#: (case-insensitively, also with trailing digits or symbols) in every URL unless `env == "dev"`.
KNOWN_DEFAULT_SECRETS = frozenset({
    "streamguard-local", "streamguard", "password", "passw0rd", "postgres", "guest", "admin",
    "root", "minioadmin", "secret", "changeme", "changethis", "redis", "default", "test",
    "example", "letmein", "qwerty",
})
#: Shortest password accepted outside dev.
MIN_SECRET_LEN = 12
#: URL schemes (prefixes) whose servers must be reached with a password outside dev.
PASSWORD_REQUIRED_SCHEMES = ("postgres", "redis", "rediss", "amqp", "pyamqp", "mysql")

DAY_S = 24 * 3600
DEFAULT_DATA_DIR = Path("./.streamguard")


class DbSettings(BaseModel):
    """SQLAlchemy URL. `postgresql://` URLs are run with psycopg 3."""

    url: str = f"sqlite:///{DEFAULT_DATA_DIR.as_posix()}/streamguard.db"
    #: Connection pool of each process (PostgreSQL): size, overflow, and the wait for a free one.
    #: The API keeps up to `pool_size + max_overflow` connections open (`api.main.api_pool`).
    pool_size: int = Field(default=10, gt=0)
    max_overflow: int = Field(default=10, ge=0)
    pool_timeout_s: float = Field(default=5.0, gt=0)
    connect_timeout_s: int = Field(default=5, gt=0)
    #: PostgreSQL `statement_timeout`; SQLite's busy timeout is `sqlite_busy_timeout_ms`.
    statement_timeout_ms: int = Field(default=30_000, gt=0)
    sqlite_busy_timeout_ms: int = Field(default=15_000, gt=0)
    #: A pooled PostgreSQL connection idle at least this long is pinged before it is reused (a
    #: dead one is replaced, and every connection opened before it with it); one back in use
    #: sooner is not: under load each comes back within milliseconds, and a server restart or a
    #: dropped link leaves every connection idle for longer than this. A statement that still
    #: finds its connection dead (cut within the window) fails once and invalidates the pool
    #: the same way. 0 pings at every checkout (SQLAlchemy's `pool_pre_ping`).
    ping_idle_s: float = Field(default=0.5, ge=0)


class RedisSettings(BaseModel):
    """Redis for live pub/sub of job events. None: no pub/sub, the SSE stream polls the DB."""

    url: str | None = None
    #: Every Redis call gives up after these (a hung Redis must not hang a request).
    socket_timeout_s: float = Field(default=2.0, gt=0)
    connect_timeout_s: float = Field(default=2.0, gt=0)


class BrokerSettings(BaseModel):
    """Celery broker. None: an embedded filesystem broker under `data_dir/broker`."""

    url: str | None = None
    # Redis redelivers an unacknowledged task after this long even while it still runs
    # (celery/celery#5935), so it must exceed the longest job; the DB lease is the real guard.
    visibility_timeout_s: int = Field(default=7 * DAY_S, gt=0)
    #: Publishing a task gives up after this (the submit then answers 503).
    connect_timeout_s: float = Field(default=3.0, gt=0)


class StorageSettings(BaseModel):
    """Artifact store (`file:///abs/path` or `s3://bucket/prefix`). Default: data_dir/artifacts."""

    uri: str = ""
    s3_endpoint_url: str | None = None
    presign_expiry_s: int = Field(default=3600, gt=0)


class WorkerSettings(BaseModel):
    """GPU worker: job wall-time limit, lease timing, queue and scratch space."""

    max_job_runtime_s: int = Field(default=3 * DAY_S, gt=0)
    lease_s: int = Field(default=120, gt=0)
    heartbeat_s: int = Field(default=30, gt=0)
    queue: str = "gpu"
    work_dir: Path = DEFAULT_DATA_DIR / "work"
    #: A job whose worker died this many times ends `failed` (it would kill every worker).
    max_attempts: int = Field(default=3, gt=0)
    #: How often the sweeper looks for jobs whose lease expired (and re-enqueues them).
    sweep_interval_s: int = Field(default=30, gt=0)
    #: PostgreSQL `idle_in_transaction_session_timeout` of the workers' connections: a worker
    #: frozen inside one of its (millisecond) write transactions (a GC or VM pause, SIGSTOP)
    #: would keep the job row locked, and the sweeper off the job, until it is thawed; the
    #: server ends such a session after this long, so recovery takes at most this on top.
    idle_in_transaction_timeout_s: float = Field(default=10.0, gt=0)
    #: Keep each job's prepared data (scratch tokenizer, token ids) under the store's `cache/`,
    #: keyed by content hashes and the tenant, so the tenant's next job on the same files skips
    #: tokenizing; False prepares every job afresh and writes nothing there.
    token_cache: bool = True
    #: torch intra-op threads of each worker process (`torch.set_num_threads` at worker start).
    #: None: torch's default (one per core, or OMP_NUM_THREADS). Several workers sharing one
    #: machine's CPUs: cores / workers each, or their threads fight over the same cores.
    torch_threads: int | None = Field(default=None, gt=0)
    #: Prometheus metrics of this worker (samples/s, step and epoch time, GPU memory, guard
    #: warnings and stops, checkpoint uploads) served over HTTP on this port; 0 (the default)
    #: serves none. One port per worker process: several workers on one host need one each.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    #: Address the metrics port listens on (0.0.0.0 in containers, for the Prometheus server).
    metrics_host: str = "127.0.0.1"


class InferenceSettings(BaseModel):
    """Inference workers (`POST /v1/jobs/{id}/predict`): their own queue and processes, so a
    prediction never waits behind a training job."""

    queue: str = "inference"
    #: Models kept loaded per inference worker process (LRU by job id + checkpoint sha256).
    cache_size: int = Field(default=2, gt=0)
    #: Unpacked checkpoints of the cached models (default: data_dir/inference-cache).
    cache_dir: Path = DEFAULT_DATA_DIR / "inference-cache"
    #: "cpu", "cuda", "cuda:1"; None: the worker's GPU when it has one, else the CPU.
    device: str | None = None
    #: How long the API waits for an inference worker's answer before a 503 + Retry-After; a
    #: request not started by then is dropped by the worker (the task expires).
    request_timeout_s: float = Field(default=30.0, gt=0)
    #: Celery result backend of the inference tasks only. None: `db+` + db.url (PostgreSQL), or
    #: a SQLite file of its own under data_dir when db.url is SQLite.
    result_backend_url: str | None = None
    #: Results nobody collected are deleted after this (the inference worker cleans them).
    result_expires_s: int = Field(default=3600, gt=0)


class LogSettings(BaseModel):
    """Log output of every process (API, workers, `streamguard up`).

    `text` keeps each program's own format (uvicorn's, Celery's). `json` writes one JSON object
    per line: time (ISO 8601, UTC), level, logger, message, and request_id, tenant and job_id
    where known, plus exc_info (docs/operations.md).
    """

    format: Literal["text", "json"] = "text"
    #: The root logger's level; None keeps each program's own (uvicorn INFO, Celery's
    #: --loglevel); in `json` format None means INFO.
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = None


class ApiSettings(BaseModel):
    """HTTP API limits, per-tenant quotas and exposure."""

    max_upload_mb: int = Field(default=512, gt=0)
    #: Any non-upload request body (JSON); reading stops at the limit (413).
    max_json_bytes: int = Field(default=1024 * 1024, gt=0)
    #: Deepest nesting of arrays/objects accepted in a JSON body or a JSONL line.
    max_json_depth: int = Field(default=32, ge=2)
    sse_ping_s: int = Field(default=15, gt=0)
    #: Jobs of one tenant that may be running / queued at once; beyond that, 429 + Retry-After.
    max_running_jobs_per_tenant: int = Field(default=4, gt=0)
    max_queued_jobs_per_tenant: int = Field(default=20, gt=0)
    #: Requests per API key per minute (token bucket); 0 disables the limit.
    rate_limit_per_minute: int = Field(default=600, ge=0)
    #: Browser origins allowed by CORS; empty (the default) sends no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    #: Worker threads of the API process (sync handlers, database work). None: the database
    #: pool's `pool_size + max_overflow`, so a thread never waits for a connection (a request
    #: waiting for a thread holds nothing). More threads than connections only queue on the pool;
    #: on a small machine fewer may serve short requests with less CPU (handlers mostly hold the
    #: GIL), but uploads and predictions hold a thread for seconds: the default leaves room.
    threads: int | None = Field(default=None, gt=0)
    #: API worker processes `streamguard api` starts (uvicorn's `workers`). One process holds
    #: the GIL, so the API serves about one core's worth of requests; N processes share the
    #: port and scale with cores. Each builds its own database pool (N x (pool_size +
    #: max_overflow) connections in all: mind PostgreSQL's max_connections), event hub, key
    #: cache and Celery producer. Above 1, Prometheus metrics are summed over the processes
    #: (PROMETHEUS_MULTIPROC_DIR, docs/operations.md).
    workers: int = Field(default=1, gt=0)
    #: Seconds a verified API key is remembered per API process (its tenant, by the key's
    #: SHA-256), so most requests skip the key lookup; a revoked key can still be accepted for
    #: this long by a process that verified it shortly before. 0 verifies every request.
    key_cache_ttl_s: float = Field(default=10.0, ge=0)
    #: Verified keys remembered at most (the oldest are forgotten first).
    key_cache_size: int = Field(default=10_000, gt=0)
    #: A serving API process (`streamguard api`, `api.main:serve_app`, `api.main:app`) freezes
    #: what startup built out of Python's cyclic garbage collector and runs a young-generation
    #: collection every this many allocations (Python's default, 700, collected several times
    #: per request and made 50 concurrent requests cost a third more CPU each: `api.gctune`).
    #: 0 leaves the collector as Python sets it.
    gc_gen0_threshold: int = Field(default=50_000, ge=0)
    #: Hub models a job may name (`owner/name`); None allows any well-formed hub name.
    allowed_hub_models: list[str] | None = None
    #: Train/val row overlap (identical functions) above this fraction is a warning on the job.
    overlap_warn_fraction: float = Field(default=0.01, ge=0.0, le=1.0)
    #: Serve Prometheus metrics at GET /metrics (no API key, like /healthz: keep it off the
    #: public network or set False). They name no tenant, job or key.
    metrics: bool = True


class TrackerSettings(BaseModel):
    """Experiment trackers a job may name in `config.trackers` (`streamguard.trackers`).

    A tracker that is down or misconfigured never fails a job: the job gets one `warning`
    event and trains on. Credentials reach MLflow's client through its own environment
    variables, set around each of its calls only.
    """

    #: MLflow tracking server, e.g. `https://mlflow.internal`; None: a job naming `mlflow`
    #: trains without it (and says so in a warning event).
    mlflow_uri: str | None = None
    mlflow_experiment: str = Field(default="streamguard", min_length=1)
    #: HTTP basic auth of the server (`mlflow server --app-name basic-auth`), or a bearer token.
    mlflow_username: str | None = None
    mlflow_password: SecretStr | None = None
    mlflow_token: SecretStr | None = None
    #: Each MLflow request gives up after this and this many retries, so a dead server costs a
    #: job seconds once (the tracker is off after its first failure), not minutes per call.
    mlflow_timeout_s: int = Field(default=5, gt=0)
    mlflow_max_retries: int = Field(default=1, ge=0, le=10)
    #: The final model upload's own timeout (hundreds of MB for a CodeBERT-sized model).
    mlflow_artifact_timeout_s: int = Field(default=300, gt=0)
    #: TensorBoard event files, a folder per job (`<tensorboard_dir>/<tenant id>/<job id>`).
    #: Default: `data_dir/tensorboard`, beside the artifact store.
    tensorboard_dir: Path = DEFAULT_DATA_DIR / "tensorboard"


class Settings(BaseSettings):
    """The whole deployment configuration, validated once at startup.

    Raises:
        pydantic.ValidationError: a placeholder secret outside dev, a broker visibility timeout
            not above the job wall-time limit, or a heartbeat not shorter than the lease.
    """

    # hide_input_in_errors: a refused URL must not be echoed, password and all, in the error.
    model_config = SettingsConfigDict(env_prefix="SG_", env_nested_delimiter="__",
                                      extra="ignore", hide_input_in_errors=True)

    env: Literal["dev", "prod"] = "dev"
    data_dir: Path = DEFAULT_DATA_DIR
    db: DbSettings = Field(default_factory=DbSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    trackers: TrackerSettings = Field(default_factory=TrackerSettings)

    @model_validator(mode="after")
    def _derive_and_check(self) -> Settings:
        # Paths under data_dir follow data_dir unless they were set explicitly.
        if "url" not in self.db.model_fields_set:
            self.db.url = f"sqlite:///{self.data_dir.as_posix()}/streamguard.db"
        if not self.storage.uri:
            self.storage.uri = (self.data_dir.resolve() / "artifacts").as_uri()
        if "work_dir" not in self.worker.model_fields_set:
            self.worker.work_dir = self.data_dir / "work"
        if "cache_dir" not in self.inference.model_fields_set:
            self.inference.cache_dir = self.data_dir / "inference-cache"
        if "tensorboard_dir" not in self.trackers.model_fields_set:
            self.trackers.tensorboard_dir = self.data_dir / "tensorboard"

        if self.broker.visibility_timeout_s <= self.worker.max_job_runtime_s:
            raise ValueError(
                f"broker.visibility_timeout_s ({self.broker.visibility_timeout_s}) must exceed "
                f"worker.max_job_runtime_s ({self.worker.max_job_runtime_s}), or the broker "
                "redelivers jobs that are still running")
        if self.worker.heartbeat_s >= self.worker.lease_s:
            raise ValueError(
                f"worker.heartbeat_s ({self.worker.heartbeat_s}) must be shorter than "
                f"worker.lease_s ({self.worker.lease_s})")
        if self.env != "dev":
            problems = [f"{name}: {problem}" for name, url in self._urls().items()
                        if url and (problem := url_secret_problem(url))]
            problems += [f"{name}: {problem}" for name, secret in self._secrets().items()
                         if secret is not None and (problem := secret_problem(
                             secret.get_secret_value(), self.trackers.mlflow_username))]
            if problems:
                raise ValueError(
                    f"env={self.env!r} refuses weak or missing secrets:\n  - "
                    + "\n  - ".join(problems)
                    + f"\naccepted: a password of at least {MIN_SECRET_LEN} characters that is "
                    "not a known default (e.g. `openssl rand -hex 24`); env='dev' accepts any")
        return self

    def _urls(self) -> dict[str, str | None]:
        return {"db.url": self.db.url, "redis.url": self.redis.url,
                "broker.url": self.broker.url, "storage.uri": self.storage.uri,
                "inference.result_backend_url": self.inference.result_backend_url,
                "storage.s3_endpoint_url": self.storage.s3_endpoint_url,
                "trackers.mlflow_uri": self.trackers.mlflow_uri}

    def _secrets(self) -> dict[str, SecretStr | None]:
        return {"trackers.mlflow_password": self.trackers.mlflow_password,
                "trackers.mlflow_token": self.trackers.mlflow_token}

    # --- derived values for the broker -----------------------------------------------------

    @property
    def broker_dir(self) -> Path:
        """Folder of the embedded filesystem broker (used when `broker.url` is None)."""
        return self.data_dir / "broker"

    def broker_url_resolved(self) -> str:
        """The Celery broker URL: the configured one, or `filesystem://`."""
        return self.broker.url or "filesystem://"

    def broker_transport_options(self) -> dict[str, Any]:
        """Celery `broker_transport_options` matching `broker_url_resolved()`."""
        if self.broker.url is None:
            queue = str(self.broker_dir / "queue")
            return {"data_folder_in": queue, "data_folder_out": queue,
                    "processed_folder": str(self.broker_dir / "processed"),
                    "control_folder": str(self.broker_dir / "control"),
                    "polling_interval": 0.2}
        return {"visibility_timeout": self.broker.visibility_timeout_s}

    def inference_result_backend(self) -> str:
        """The inference tasks' Celery result backend: the setting, or the database's URL as a
        `db+` backend (a SQLite database gets a file of its own: no lock shared with jobs)."""
        if self.inference.result_backend_url:
            return self.inference.result_backend_url
        if self.db.url.startswith("sqlite"):
            return f"db+sqlite:///{self.data_dir.resolve().as_posix()}/inference-results.db"
        url = self.db.url
        for plain in ("postgresql://", "postgres://"):  # psycopg 3, as streamguard.db runs it
            if url.startswith(plain):
                url = "postgresql+psycopg://" + url[len(plain):]
        return "db+" + url

    def ensure_dirs(self) -> None:
        """Create data_dir and the local folders derived from it (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.worker.work_dir.mkdir(parents=True, exist_ok=True)
        if self.broker.url is None:
            for sub in ("queue", "processed", "control"):
                (self.broker_dir / sub).mkdir(parents=True, exist_ok=True)


def url_secret_problem(url: str) -> str | None:
    """Why the password in `url` is unacceptable outside dev, or None. Never names the secret.

    A server URL (PostgreSQL, Redis, AMQP, ...) must carry a password: trust auth and a Redis
    without `requirepass` are for development only. Any password present, in the userinfo or as
    a `?password=` parameter, must be at least MIN_SECRET_LEN characters, not a known default,
    not the user name and not one repeated character.
    """
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return "is not a valid URL"
    scheme = parts.scheme.lower()
    query_passwords = parse_qs(parts.query, keep_blank_values=True).get("password", [])
    if password is None and query_passwords:
        password = query_passwords[0]
    if password is None:
        if scheme.startswith(PASSWORD_REQUIRED_SCHEMES):
            example = f"{scheme}://{'' if scheme.startswith('redis') else 'user'}:<password>@host"
            return (f"has no password ({scheme} servers without one are for development only); "
                    f"accepted: {example}...")
        return None
    return secret_problem(unquote(password), unquote(username) if username else None)


def secret_problem(secret: str, username: str | None = None) -> str | None:
    """Why a password or token is unacceptable outside dev, or None. Never names the secret."""
    if not secret:
        return "has an empty password"
    bare = secret.lower().rstrip("0123456789!@#$%^&*()-_=+.,;:?")
    if secret.lower() in KNOWN_DEFAULT_SECRETS or bare in KNOWN_DEFAULT_SECRETS:
        return "uses a well-known default password"
    if len(secret) < MIN_SECRET_LEN:
        return f"has a password shorter than {MIN_SECRET_LEN} characters"
    if username and username.lower() == secret.lower():
        return "has a password equal to its user name"
    if len(set(secret)) == 1:
        return "has a password of one repeated character"
    return None


class _LogOnly(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SG_", env_nested_delimiter="__",
                                      extra="ignore")

    log: LogSettings = Field(default_factory=LogSettings)


def get_log_settings() -> LogSettings:
    """Only the `log` section from the environment (`streamguard up`, whose other settings are
    its own and must not fail on an inherited SG_ variable)."""
    return _LogOnly().log


@lru_cache
def get_settings() -> Settings:
    """The process-wide Settings, read from the environment once. `cache_clear()` in tests."""
    return Settings()
