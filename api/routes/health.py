"""Liveness (/healthz) and readiness (/readyz: database, broker, object store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa
from fastapi import APIRouter, Request

from api.deps import SettingsDep, StoreDep
from api.errors import NotReady
from api.routes import error_responses
from api.schemas import CheckRead, HealthRead, ReadinessRead
from streamguard.settings import Settings
from streamguard.storage import ArtifactStore, LocalArtifactStore

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthRead)
def healthz() -> HealthRead:
    """The process is alive (no dependency is checked)."""
    return HealthRead()


def _check(fn: Callable[[], str]) -> CheckRead:
    try:
        return CheckRead(ok=True, detail=fn())
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; it is reported
        return CheckRead(ok=False, detail=f"{type(exc).__name__}: {exc}"[:500])


def _database(request: Request) -> str:
    with request.app.state.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    return "SELECT 1 ok"


def _broker(settings: Settings) -> str:
    if settings.broker.url is None:
        folder = Path(settings.broker_transport_options()["data_folder_in"])
        if not folder.is_dir():
            raise FileNotFoundError(f"filesystem broker folder {folder} does not exist")
        return f"filesystem broker at {folder}"
    from kombu.connection import Connection

    with Connection(settings.broker.url, connect_timeout=2,  # type: ignore[no-untyped-call]
                    transport_options=settings.broker_transport_options()) as conn:
        conn.ensure_connection(max_retries=1)
    return "connected"


def _store(store: ArtifactStore) -> str:
    if isinstance(store, LocalArtifactStore) and not store.root.is_dir():
        raise FileNotFoundError(f"store root {store.root} does not exist")
    store.list("readyz/")  # one LIST on a tiny prefix: reachability, not a bucket walk
    return f"{store!r} reachable"


@router.get("/readyz", response_model=ReadinessRead, responses=error_responses(503))
def readyz(request: Request, settings: SettingsDep, store: StoreDep) -> ReadinessRead:
    """200 when the database, the broker and the object store all answer; else 503 naming them."""
    checks = {"database": _check(lambda: _database(request)),
              "broker": _check(lambda: _broker(settings)),
              "store": _check(lambda: _store(store))}
    failed = [name for name, check in checks.items() if not check.ok]
    if failed:
        raise NotReady(f"not ready: {', '.join(failed)} failed",
                       details={name: c.model_dump() for name, c in checks.items()})
    return ReadinessRead(checks=checks)
