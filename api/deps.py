"""Cross-cutting dependencies as `Annotated` aliases, written once.

`SettingsDep`, `SessionDep`, `StoreDep`, `EnqueueDep`, `CurrentTenant` and `JobDep` (the job of
the path, owned by the caller, else 404). The engine, session factory and store are built once
per app in the lifespan (`api.main`) and kept on `app.state`; tests override these functions
through `app.dependency_overrides`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import Unauthorized
from api.queue import Enqueue, build_celery, celery_enqueue
from api.ratelimit import check_rate
from streamguard.contract import ID_PATTERN
from streamguard.db import tenants
from streamguard.db.jobs import get_job_or_raise
from streamguard.db.models import Job, Tenant
from streamguard.settings import Settings
from streamguard.storage import ArtifactStore


def get_app_settings(request: Request) -> Settings:
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


def get_store(request: Request) -> ArtifactStore:
    """The artifact store built from `settings.storage` at startup."""
    store: ArtifactStore = request.app.state.store
    return store


StoreDep = Annotated[ArtifactStore, Depends(get_store)]


def get_enqueue(request: Request, settings: SettingsDep) -> Enqueue:
    """Send jobs through a Celery producer built on first use (tests override this)."""
    state = request.app.state
    if getattr(state, "celery", None) is None:
        state.celery = build_celery(settings)
    return celery_enqueue(state.celery, settings.worker.queue)


EnqueueDep = Annotated[Enqueue, Depends(get_enqueue)]

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer sg_...`")


def get_current_tenant(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Tenant:
    """The tenant owning the bearer key; 401 (with WWW-Authenticate) otherwise; 429 when the
    key is over its request rate (api.ratelimit)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>` with the "
                           "key issued to your tenant")
    tenant = tenants.authenticate(session=session, key=credentials.credentials)
    if tenant is None:
        raise Unauthorized("unknown or revoked API key: send a current key as "
                           "`Authorization: Bearer <key>`")
    check_rate(request, settings, tenants.hash_key(credentials.credentials))
    return tenant


CurrentTenant = Annotated[Tenant, Depends(get_current_tenant)]


JobId = Annotated[str, Path(min_length=32, max_length=32, pattern=ID_PATTERN,
                            description="A job id (32 hex characters).")]


def get_job_for_tenant(job_id: JobId, session: SessionDep, tenant: CurrentTenant) -> Job:
    """The job of the path if the caller owns it; another tenant's job is a 404 too."""
    return get_job_or_raise(session=session, job_id=job_id, tenant_id=tenant.id)


JobDep = Annotated[Job, Depends(get_job_for_tenant)]
