"""Liveness (/healthz) and readiness (/readyz: database, broker, object store).

Both are unauthenticated, so they say only which dependency answers (`"store: unreachable"`);
why it does not (paths, hosts, ports, driver messages) goes to the server log.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthRead, operation_id="getHealth",
            responses=error_responses(500))
def healthz() -> HealthRead:
    """The process is alive (no dependency is checked)."""
    return HealthRead()


def _check(name: str, fn: Callable[[], None]) -> CheckRead:
    try:
        fn()
    except Exception:  # noqa: BLE001 - any failure means "not ready"; logged, not shown
        log.warning("readiness check %r failed", name, exc_info=True)
        return CheckRead(ok=False, detail=f"{name}: unreachable")
    return CheckRead(ok=True, detail=f"{name}: ok")


def _database(request: Request) -> None:
    with request.app.state.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _broker(settings: Settings) -> None:
    if settings.broker.url is None:
        folder = Path(settings.broker_transport_options()["data_folder_in"])
        if not folder.is_dir():
            raise FileNotFoundError(f"filesystem broker folder {folder} does not exist")
        return
    from kombu.connection import Connection

    with Connection(settings.broker.url, connect_timeout=2,  # type: ignore[no-untyped-call]
                    transport_options=settings.broker_transport_options()) as conn:
        conn.ensure_connection(max_retries=1)


def _store(store: ArtifactStore) -> None:
    if isinstance(store, LocalArtifactStore) and not store.root.is_dir():
        raise FileNotFoundError(f"store root {store.root} does not exist")
    store.list("readyz/")  # one LIST on a tiny prefix: reachability, not a bucket walk


@router.get("/readyz", response_model=ReadinessRead, operation_id="getReadiness",
            responses=error_responses(500, 503))
def readyz(request: Request, settings: SettingsDep, store: StoreDep) -> ReadinessRead:
    """200 when the database, the broker and the object store all answer; else 503 naming them.

    Each check reads `"<name>: ok"` or `"<name>: unreachable"`; the cause is in the server log.
    """
    checks = {"database": _check("database", lambda: _database(request)),
              "broker": _check("broker", lambda: _broker(settings)),
              "store": _check("store", lambda: _store(store))}
    failed = [name for name, check in checks.items() if not check.ok]
    if failed:
        raise NotReady(f"not ready: {', '.join(failed)} unreachable",
                       details={name: check.model_dump() for name, check in checks.items()})
    return ReadinessRead(checks=checks)
