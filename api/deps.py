"""Cross-cutting dependencies as `Annotated` aliases, written once.

`SettingsDep`, `SessionDep`, `StoreDep`, `EnqueueDep`, `CurrentTenant` and `JobDep` (the job of
the path, owned by the caller, else 404). The engine, session factories, store, rate limiter and
key cache are built once per app in the lifespan (`api.main`) and kept on `app.state`; tests
override these functions through `app.dependency_overrides`.

Every synchronous dependency costs a trip through the worker-thread pool (and a blocking one
holds a thread while it waits), so the ones that do no blocking I/O are `async def`: settings,
store, enqueue, and the caller's tenant (a verified key is remembered for a few seconds,
`api.keycache`; only a key not seen lately is looked up, in one worker-thread hop with a
session of its own; the rate limit is metered on the event loop, or in one hop to Redis).
The busiest handlers do their database work in ONE worker-thread hop with a session opened
and closed inside it (`run_in_session`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.errors import Unauthorized
from api.keycache import KeyCache, Principal
from api.queue import Enqueue, build_celery, celery_enqueue
from api.ratelimit import check_rate, meter
from streamguard.contract import ID_PATTERN
from streamguard.db import tenants
from streamguard.db.jobs import get_job_or_raise
from streamguard.db.models import Job
from streamguard.logs import tenant_var
from streamguard.settings import Settings
from streamguard.storage import ArtifactStore

T = TypeVar("T")


async def get_app_settings(request: Request) -> Settings:
    """The app's Settings (`create_app(settings)`), read once at startup: no per-request work,
    and no dependency override (overrides make FastAPI re-solve every dependency per request)."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


def get_session(request: Request) -> Iterator[Session]:
    """A session from the app's factory, closed after the request (services commit)."""
    session = request.app.state.session_factory()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


async def run_in_session(request: Request, fn: Callable[..., T], /, **kwargs: Any) -> T:
    """`fn(session=..., **kwargs)` in ONE worker-thread hop, with a session opened and closed
    inside it (so it never waits for a thread while holding a pooled connection)."""
    factory: sessionmaker[Session] = request.app.state.session_factory

    def call() -> T:
        with factory() as session:
            return fn(session=session, **kwargs)

    return await run_in_threadpool(call)


async def run_in_connection(request: Request, fn: Callable[..., T], /, **kwargs: Any) -> T:
    """`fn(connection=..., **kwargs)` in ONE worker-thread hop, on a connection of the read
    engine (`streamguard.db.session.read_engine`: autocommit on PostgreSQL), for handlers that
    only read columns. No ORM session is built: its construction, transaction bookkeeping and
    close were about a sixteenth of a job-list request's Python work."""
    engine: Engine = request.app.state.read_engine

    def call() -> T:
        with engine.connect() as connection:
            return fn(connection=connection, **kwargs)

    return await run_in_threadpool(call)


async def get_store(request: Request) -> ArtifactStore:
    """The artifact store built from `settings.storage` at startup."""
    store: ArtifactStore = request.app.state.store
    return store


StoreDep = Annotated[ArtifactStore, Depends(get_store)]


async def get_enqueue(request: Request, settings: SettingsDep) -> Enqueue:
    """Send jobs through a Celery producer built on first use (tests override this)."""
    state = request.app.state
    if getattr(state, "celery", None) is None:
        state.celery = build_celery(settings)  # configuration only: no connection yet
    return celery_enqueue(state.celery, settings.worker.queue)


EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sg_...`")


def _key_of(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>` with the "
                           "key issued to your tenant")
    return credentials.credentials


def _refused() -> Unauthorized:
    return Unauthorized("unknown or revoked API key: send a current key as "
                        "`Authorization: Bearer <key>`")


def key_cache(request: Request) -> KeyCache:
    """The app's cache of verified keys (`api.keycache`), built by the lifespan."""
    cache: KeyCache = request.app.state.key_cache
    return cache


def verify_key(session: Session, cache: KeyCache, key: str, digest: str) -> Principal:
    """The principal of `key` (remembered, else looked up with `session` and remembered);
    raises Unauthorized for an unknown or revoked key (never remembered)."""
    principal = cache.get(digest)
    if principal is None:
        tenant_id = tenants.authenticate_tenant_id(session=session, key=key, digest=digest)
        if tenant_id is None:
            raise _refused()
        principal = Principal(id=tenant_id, key_hash=digest)
        cache.put(principal)
    return principal


def _lookup_key(request: Request, key: str, digest: str) -> Principal:
    with request.app.state.read_session_factory() as session:
        return verify_key(session, key_cache(request), key, digest)


async def get_current_tenant(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The tenant owning the bearer key; 401 (with WWW-Authenticate) otherwise; 429 when the
    key is over its request rate (api.ratelimit).

    Reads the settings from the app, not through `SettingsDep`: every authenticated request
    solves this dependency, and each sub-dependency costs FastAPI's machinery (about 20 us)."""
    key = _key_of(credentials)
    digest = tenants.hash_key(key)
    principal = key_cache(request).get(digest)
    if principal is None:
        principal = await run_in_threadpool(_lookup_key, request, key, digest)
    tenant_var.set(principal.id)  # the request's log lines name it (reset by the middleware)
    await meter(request, request.app.state.settings, digest)
    return principal


def get_current_tenant_blocking(request: Request, session: Session, settings: Settings,
                                credentials: HTTPAuthorizationCredentials | None) -> Principal:
    """`get_current_tenant` for code already in a worker thread, with its session."""
    key = _key_of(credentials)
    digest = tenants.hash_key(key)
    principal = verify_key(session, key_cache(request), key, digest)
    tenant_var.set(principal.id)  # this thread's log lines name it
    check_rate(request, settings, digest)
    return principal


CurrentTenant = Annotated[Principal, Depends(get_current_tenant)]


JobId = Annotated[str, Path(min_length=32, max_length=32, pattern=ID_PATTERN,
                            description="A job id (32 hex characters).")]


def get_job_for_tenant(job_id: JobId, session: SessionDep, tenant: CurrentTenant) -> Job:
    """The job of the path if the caller owns it; another tenant's job is a 404 too."""
    return get_job_or_raise(session=session, job_id=job_id, tenant_id=tenant.id)


JobDep = Annotated[Job, Depends(get_job_for_tenant)]
