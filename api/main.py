"""The StreamGuard HTTP API: `create_app()` builds it; `app` is the ASGI entry point.

    uvicorn api.main:app --host 0.0.0.0 --port 8000

Everything is under /v1 (plus /healthz and /readyz). The engine, session factory and artifact
store are built once per app in the lifespan from Settings; the Celery producer on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response, register_handlers
from api.routes import checkpoints, datasets, events, health, jobs
from streamguard.db.session import make_engine, make_session_factory
from streamguard.settings import Settings, get_settings
from streamguard.storage import store_from_uri

#: Room for multipart boundaries and the small form fields around the file.
MULTIPART_OVERHEAD = 64 * 1024


class UploadLimit:
    """Refuse an upload whose Content-Length is over the limit before its body is read.

    Starlette spools a multipart body to disk before the handler runs, so the handler's own
    byte count (api.services.datasets) alone would still accept the whole body first.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" \
                and scope["path"].rstrip("/") == "/v1/datasets":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                mib = (self.max_bytes - MULTIPART_OVERHEAD) // (1024 * 1024)
                response = error_response(
                    413, "payload_too_large", f"the upload is larger than {mib} MiB, this "
                    "deployment's upload limit; split the file", field="file")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.broker.url is None:
        settings.ensure_dirs()  # the filesystem broker's folders must exist to send tasks
    engine = make_engine(settings.db.url)
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.store = store_from_uri(settings.storage.uri,
                                     endpoint_url=settings.storage.s3_endpoint_url)
    app.state.celery = None
    try:
        yield
    finally:
        engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The API. With `settings`, they replace `get_settings()` for this app (tests, embedding)."""
    settings = settings or get_settings()
    app = FastAPI(title="StreamGuard", version="1.0.0", lifespan=lifespan,
                  summary="Training as a service for vulnerable-code classifiers whose training "
                          "loop cannot collapse silently.")
    app.state.settings = settings
    app.dependency_overrides[get_settings] = lambda: settings
    register_handlers(app)
    for module in (health, datasets, jobs, events, checkpoints):
        app.include_router(module.router)
    app.add_middleware(UploadLimit,
                       max_bytes=settings.api.max_upload_mb * 1024 * 1024 + MULTIPART_OVERHEAD)
    return app


def __getattr__(name: str) -> Any:
    """`api.main:app` is built on first access, so importing this module reads no settings."""
    if name == "app":
        globals()["app"] = application = create_app()
        return application
    raise AttributeError(name)
