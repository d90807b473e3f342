"""A dependency that is down, hung or full answers 503 in the error shape, never a bare 500.

Every network call is bounded (database connect, statement and pool timeouts; Redis socket and
connect timeouts; the broker's publish budget; S3's timeouts), so a failing dependency surfaces
as one of these exceptions within seconds. `dependency_failure` names which dependency failed
(never its host, port, path or driver message: those go to the server log with the request id),
and `register_dependency_handlers(app)` installs the handlers:

- `streamguard.storage.StoreUnavailable` (a read-only, full or unreachable store):
  `store_unavailable`, with the store's own message (it names the key, never a path);
- SQLAlchemy `OperationalError`, `InterfaceError`, `DisconnectionError` (refused, hung, a
  statement timeout, SQLite busy past its timeout) and `TimeoutError` (no pooled connection
  within `db.pool_timeout_s`): `dependency_unavailable`, "the database is ...";
- redis-py `ConnectionError` / `TimeoutError`: `dependency_unavailable`, "the event service
  (Redis) is unavailable ...";
- kombu `OperationalError` (a broker connection): `dependency_unavailable`, "the job queue
  (broker) is unavailable ...".

Each answer carries `Retry-After`. Register them after `api.errors.register_handlers(app)`;
Starlette picks the most specific handler, so `StoreUnavailable` wins over the generic
`StreamGuardError` one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.errors import error_response, request_id_of
from streamguard.storage import StoreUnavailable

log = logging.getLogger(__name__)

DEPENDENCY_UNAVAILABLE = "dependency_unavailable"
STORE_UNAVAILABLE = "store_unavailable"
#: Seconds a client is asked to wait before retrying.
RETRY_AFTER_S = 5


@dataclass(frozen=True)
class DependencyFailure:
    """What a 503 says: which dependency, in words a client can act on."""

    dependency: str  # database | redis | broker | store
    code: str
    message: str


def _database_errors() -> tuple[tuple[type[Exception], ...], type[Exception]]:
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    return (OperationalError, InterfaceError, DisconnectionError), PoolTimeout


def _redis_errors() -> tuple[type[Exception], ...]:
    try:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError
    except ImportError:  # pragma: no cover - redis is a dependency of the API
        return ()
    return RedisConnectionError, RedisTimeoutError


def _broker_errors() -> tuple[type[Exception], ...]:
    try:
        from kombu.exceptions import OperationalError as BrokerError
    except ImportError:  # pragma: no cover - celery brings kombu
        return ()
    return (BrokerError,)


def dependency_failure(exc: BaseException) -> DependencyFailure | None:
    """The 503 for `exc` when a dependency (database, Redis, broker, store) failed, else None."""
    if isinstance(exc, StoreUnavailable):
        return DependencyFailure("store", STORE_UNAVAILABLE, exc.message)
    database, pool_timeout = _database_errors()
    if isinstance(exc, pool_timeout):
        return DependencyFailure("database", DEPENDENCY_UNAVAILABLE,
                                 "the database is busy (no free connection in time); retry in "
                                 f"{RETRY_AFTER_S} s")
    if isinstance(exc, database):
        return DependencyFailure("database", DEPENDENCY_UNAVAILABLE,
                                 "the database is unavailable or did not answer in time; retry "
                                 f"in {RETRY_AFTER_S} s")
    if isinstance(exc, _redis_errors()):
        return DependencyFailure("redis", DEPENDENCY_UNAVAILABLE,
                                 "the event service (Redis) is unavailable; retry in "
                                 f"{RETRY_AFTER_S} s")
    if isinstance(exc, _broker_errors()):
        return DependencyFailure("broker", DEPENDENCY_UNAVAILABLE,
                                 "the job queue (broker) is unavailable; retry in "
                                 f"{RETRY_AFTER_S} s")
    return None


def dependency_exception_types() -> Iterator[type[Exception]]:
    """Every exception class `dependency_failure` answers (the handlers' keys)."""
    database, pool_timeout = _database_errors()
    yield StoreUnavailable
    yield pool_timeout
    yield from database
    yield from _redis_errors()
    yield from _broker_errors()


def dependency_error_response(request: Request, exc: BaseException) -> JSONResponse:
    """503 in the error shape with Retry-After; the cause is logged with the request id."""
    failure = dependency_failure(exc)
    if failure is None:  # registered for a class it does not answer: a programming error
        raise exc
    request_id = request_id_of(request.scope)
    log.warning("%s unavailable on %s %s [request_id=%s]: %s", failure.dependency,
                request.method, request.url.path, request_id, type(exc).__name__,
                exc_info=exc)
    return error_response(503, failure.code, failure.message,
                          headers={"Retry-After": str(RETRY_AFTER_S)}, request_id=request_id)


async def _handler(request: Request, exc: Exception) -> JSONResponse:
    return dependency_error_response(request, exc)


def register_dependency_handlers(app: FastAPI) -> None:
    """Answer dependency failures with 503 (call after `api.errors.register_handlers`)."""
    for exc_type in dependency_exception_types():
        app.add_exception_handler(exc_type, _handler)
