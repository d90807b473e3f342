"""Liveness (/healthz) and readiness (/readyz: database, broker, object store).

Both are unauthenticated, so they say only which dependency fails and in a few generic words
(`"store: not writable"`); why (paths, hosts, ports, driver messages) goes to the server log.

`/healthz` is `async def` with no dependency: it runs on the event loop, never waits for the
database, the connection pool or the thread pool, so it answers while those are saturated.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Callable

import sqlalchemy as sa
from fastapi import APIRouter, Request

from api.deps import SettingsDep, StoreDep
from api.errors import NotReady
from api.routes import error_responses
from api.schemas import CheckRead, HealthRead, ReadinessRead
from streamguard.broker import check_broker
from streamguard.errors import StorageError
from streamguard.settings import Settings
from streamguard.storage import ArtifactStore, LocalArtifactStore

log = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


#: A local store is not ready with less free space than this AND less than MIN_FREE_FRACTION of
#: its filesystem (so a small disk is not refused for being small).
MIN_FREE_BYTES = 100 * 2**20
MIN_FREE_FRACTION = 0.01
#: Where the store check writes (and deletes) its probe object.
PROBE_PREFIX = "readyz/"


class CheckFailed(Exception):
    """A check failed for a reason that may be shown (`reason`: a few generic words)."""

    def __init__(self, reason: str, log_message: str) -> None:
        super().__init__(log_message)
        self.reason = reason


@router.get("/healthz", response_model=HealthRead, operation_id="getHealth",
            responses=error_responses(500))
async def healthz() -> HealthRead:
    """The process is alive (no dependency is checked)."""
    return HealthRead()


def _check(name: str, fn: Callable[[], None]) -> CheckRead:
    try:
        fn()
    except CheckFailed as exc:
        log.warning("readiness check %r failed: %s", name, exc)
        return CheckRead(ok=False, detail=f"{name}: {exc.reason}")
    except Exception:  # noqa: BLE001 - any failure means "not ready"; logged, not shown
        log.warning("readiness check %r failed", name, exc_info=True)
        return CheckRead(ok=False, detail=f"{name}: unreachable")
    return CheckRead(ok=True, detail=f"{name}: ok")


def _database(request: Request) -> None:
    with request.app.state.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def _broker(settings: Settings) -> None:
    """A real round trip with publishing's timeouts: a hung broker fails, never hangs."""
    check_broker(settings)


def _store(store: ArtifactStore) -> None:
    """Writable (a tiny object put, then deleted, under `readyz/`) and, when local, not full."""
    if isinstance(store, LocalArtifactStore):
        if not store.root.is_dir():
            raise FileNotFoundError(f"store root {store.root} is not a directory")
        usage = shutil.disk_usage(store.root)
        if usage.free < min(MIN_FREE_BYTES, MIN_FREE_FRACTION * usage.total):
            raise CheckFailed("out of space", f"store root {store.root} has {usage.free} "
                              f"bytes free of {usage.total}")
    key = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    if not isinstance(store, LocalArtifactStore):
        store.put_bytes(b"ok", key)  # S3: any failure reads `unreachable`
        store.delete(key)
        return
    try:
        store.put_bytes(b"ok", key)
        store.delete(key)
    except (OSError, StorageError) as exc:  # read-only, no permission, not a folder, full
        raise CheckFailed("not writable", f"writing the probe object failed: {exc!r}") from exc


@router.get("/readyz", response_model=ReadinessRead, operation_id="getReadiness",
            responses=error_responses(500, 503))
def readyz(request: Request, settings: SettingsDep, store: StoreDep) -> ReadinessRead:
    """200 when the database, the broker and the object store all answer; else 503 naming them.

    Each check reads `"<name>: ok"` or `"<name>: unreachable"`; the cause is in the server log.
    """
    # The docstring above is the published OpenAPI description (docs/openapi.json). The store
    # check also fails as `store: not writable` (the probe put failed) or `store: out of space`.
    checks = {"database": _check("database", lambda: _database(request)),
              "broker": _check("broker", lambda: _broker(settings)),
              "store": _check("store", lambda: _store(store))}
    failed: dict[str, list[str]] = {}  # reason -> names, e.g. {"unreachable": ["broker"]}
    for name, check in checks.items():
        if not check.ok:
            failed.setdefault(check.detail.removeprefix(f"{name}: "), []).append(name)
    if failed:
        reasons = "; ".join(f"{', '.join(names)} {reason}" for reason, names in failed.items())
        raise NotReady(f"not ready: {reasons}",
                       details={name: check.model_dump() for name, check in checks.items()})
    return ReadinessRead(checks=checks)
