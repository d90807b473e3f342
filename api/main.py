"""The StreamGuard HTTP API: `create_app()` builds it; `app` and `serve_app` are the entry points
of a process that serves it.

    streamguard api --host 0.0.0.0 --port 8000 --workers 4   # production: N processes
    uvicorn api.main:app --host 0.0.0.0 --port 8000           # one process
    uvicorn --factory api.main:serve_app --workers 4          # the same, as a factory

Everything is under /v1 (plus /healthz, /readyz and /metrics, Prometheus's format). The
engine, session factories, artifact store, rate limiter and key cache are built once per app
in the lifespan from Settings, and the worker-thread pool is sized there (`api.threads`,
default the database pool's size plus its overflow: requests queue for a thread, holding
nothing, rather than for a pooled connection while holding a thread); the Celery producer on
first use. Every one of these is per process: `streamguard api --workers N` runs N copies of
this lifespan, which share only the database, Redis and the broker (no startup step here
must run once: migrations are `streamguard db upgrade`'s, before the API starts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI

from api.dependency_errors import register_dependency_handlers
from api.errors import register_handlers
from api.gctune import tune_gc
from api.keycache import KeyCache
from api.metrics import ApiMetrics, StateCollector
from api.middleware import install_edge
from api.openapi import install as install_openapi
from api.ratelimit import build_rate_limiter
from api.routes import checkpoints, datasets, events, health, jobs, predict, report, ui
from api.routes import metrics as metrics_route
from api.streams import EventHub
from streamguard.db.session import (
    commit_probe,
    make_engine,
    make_read_session_factory,
    make_session_factory,
    read_engine,
)
from streamguard.logs import configure_logging
from streamguard.settings import Settings, get_settings
from streamguard.storage import store_from_uri
from streamguard.version import package_version


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.broker.url is None:
        settings.ensure_dirs()  # the filesystem broker's folders must exist to send tasks
    engine = make_engine(settings.db, **api_pool(settings))  # timeouts etc. from settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.read_engine = read_engine(engine)
    app.state.read_session_factory = make_read_session_factory(engine)
    # The default thread limiter of this event loop: every sync handler and dependency.
    anyio.to_thread.current_default_thread_limiter().total_tokens = api_threads(settings)
    app.state.key_cache = KeyCache(settings.api.key_cache_ttl_s, settings.api.key_cache_size)
    app.state.rate_limiter = build_rate_limiter(settings)
    app.state.store = store_from_uri(settings.storage.uri,
                                     endpoint_url=settings.storage.s3_endpoint_url)
    app.state.celery = None
    metrics: ApiMetrics | None = getattr(app.state, "metrics", None)
    multiprocess = metrics is not None and metrics.multiprocess
    probe = commit_probe(engine)
    app.state.event_hub = hub = EventHub(  # one event poller for every SSE stream
        app.state.session_factory, redis_url=settings.redis.url,
        redis_socket_timeout_s=settings.redis.socket_timeout_s,
        redis_connect_timeout_s=settings.redis.connect_timeout_s,
        on_listeners=metrics.set_sse_streams if metrics is not None and multiprocess else None,
        commit_probe=probe)  # SQLite: read as soon as something commits
    await hub.start()
    if metrics is not None:
        # several API processes: the streams are a livesum gauge, not this process's count
        metrics.watch_state(StateCollector(settings, app.state.read_session_factory,
                                           None if multiprocess else lambda: hub.listeners))
    if app.state.serving:  # this process is the server's own: startup is over, tune its GC
        tune_gc(settings.api.gc_gen0_threshold)
    try:
        yield
    finally:
        await hub.stop()
        if probe is not None:
            probe.close()
        engine.dispose()
        if metrics is not None:
            metrics.process_exiting()


def api_pool(settings: Settings) -> dict[str, int]:
    """The API's connection pool: it KEEPS every connection it opens, up to the deployment's
    budget (`db.pool_size + db.max_overflow`), with no overflow beyond it.

    With the default `pool_size` below the thread count, a busy API opened overflow connections
    and closed each one as it came back (a pool keeps only `pool_size` idle), so under steady
    load it opened a new PostgreSQL session — a server process fork and its authentication —
    several times a second: 78 in 8 s of `GET /v1/jobs` at 50 clients, against 1 with this pool.
    Same most connections at once as before; they just stay open while idle.
    """
    return {"pool_size": settings.db.pool_size + settings.db.max_overflow, "max_overflow": 0}


def api_threads(settings: Settings) -> int:
    """Worker threads of the API: `api.threads`, else one per pooled database connection."""
    return settings.api.threads or settings.db.pool_size + settings.db.max_overflow


def create_app(settings: Settings | None = None, *, serving: bool = False) -> FastAPI:
    """The API. With `settings`, they replace `get_settings()` for this app (tests, embedding).

    `serving`: the app is what this process exists to serve, so its startup may tune
    process-wide state, Python's garbage collector (`api.gctune`, `api.gc_gen0_threshold`);
    an app embedded in another process (tests) leaves that process's collector alone."""
    settings = settings or get_settings()
    configure_logging(settings.log)  # before anything logs; uvicorn's loggers too (json)
    app = FastAPI(title="StreamGuard", version=package_version(), lifespan=lifespan,
                  summary="Training as a service for vulnerable-code classifiers whose training "
                          "loop cannot collapse silently.",
                  separate_input_output_schemas=False)
    install_openapi(app)
    app.state.settings = settings
    app.state.serving = serving
    register_handlers(app)
    register_dependency_handlers(app)
    install_edge(app, settings)  # middleware, CORS, id/name checks: before the routers
    for module in (health, datasets, jobs, events, checkpoints, predict, report, ui):
        app.include_router(module.router)
    if settings.api.metrics:
        app.include_router(metrics_route.router)
    return app


def serve_app() -> FastAPI:
    """The factory of a serving process (`streamguard api`, `uvicorn --factory
    api.main:serve_app`): `create_app(serving=True)` from the environment's settings."""
    return create_app(serving=True)


def __getattr__(name: str) -> Any:
    """`api.main:app` (a serving process's app) is built on first access, so importing this
    module reads no settings."""
    if name == "app":
        globals()["app"] = application = serve_app()
        return application
    raise AttributeError(name)
