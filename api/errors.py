"""API-level errors and the one place that maps every error to HTTP.

Every error answers the same JSON shape::

    {"error": {"code": "...", "message": "...", "field": "config.lr" | null, "details": ...}}

Services raise `StreamGuardError` subclasses (never `HTTPException`); `register_handlers` turns
them, FastAPI's `RequestValidationError` and Starlette's `HTTPException` into that shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamguard.db.datasets import DatasetNotFound
from streamguard.db.jobs import DuplicateIdempotencyKey, InvalidCursor, StaleLease
from streamguard.errors import (
    CheckpointError,
    DataError,
    InvalidTrainConfig,
    JobNotFound,
    JobStateConflict,
    StorageError,
    StreamGuardError,
)
from streamguard.storage import ArtifactNotFound

# --- errors raised by the API services -------------------------------------------------------


class Unauthorized(StreamGuardError):
    """Missing, malformed or unknown API key."""

    code = "unauthorized"


class InvalidRequest(StreamGuardError):
    """A request field is well-formed but unacceptable (a foreign dataset, a bad URI, ...)."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message, field=field)
        self.details = details


class PayloadTooLarge(StreamGuardError):
    """An upload above `settings.api.max_upload_mb`."""

    code = "payload_too_large"


class CheckpointNotFound(StreamGuardError):
    """No checkpoint of that name for the job; the message lists the available names."""

    code = "not_found"


class IdempotencyConflict(StreamGuardError):
    """The Idempotency-Key was used before with a different request body."""

    code = "idempotency_conflict"


class QueueUnavailable(StreamGuardError):
    """The broker refused the task; the job was marked failed."""

    code = "queue_unavailable"


class NotReady(StreamGuardError):
    """A readiness check failed; `details` holds every check."""

    code = "not_ready"

    def __init__(self, message: str, *, details: Any) -> None:
        super().__init__(message)
        self.details = details


# --- mapping -----------------------------------------------------------------------------------

#: Most specific first: the first isinstance match wins.
STATUS_BY_ERROR: list[tuple[type[StreamGuardError], int]] = [
    (Unauthorized, 401),
    (PayloadTooLarge, 413),
    (InvalidTrainConfig, 422),
    (DataError, 422),
    (InvalidRequest, 422),
    (InvalidCursor, 422),
    (CheckpointError, 422),
    (JobNotFound, 404),
    (DatasetNotFound, 404),
    (CheckpointNotFound, 404),
    (ArtifactNotFound, 404),
    (JobStateConflict, 409),
    (DuplicateIdempotencyKey, 409),
    (IdempotencyConflict, 409),
    (StaleLease, 409),
    (QueueUnavailable, 503),
    (NotReady, 503),
]
#: StorageError about the request itself (a bad key or URI) is the client's; the rest is upstream.
CLIENT_STORAGE_FIELDS = frozenset({"key", "uri", "bucket"})


def status_for(exc: StreamGuardError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    if isinstance(exc, StorageError):
        return 400 if exc.field in CLIENT_STORAGE_FIELDS else 502
    return 400


def details_for(exc: StreamGuardError) -> Any:
    if isinstance(exc, InvalidTrainConfig):
        return [{"field": config_field(p["field"]), "message": p["message"]}
                for p in exc.problems]
    if isinstance(exc, DataError):
        return {"total_bad_lines": exc.total,
                "lines": [{"line": n, "message": why} for n, why in exc.problems]}
    if isinstance(exc, DuplicateIdempotencyKey):
        return {"job_id": exc.job_id}
    return getattr(exc, "details", None)


def config_field(field: str) -> str:
    """`lr` -> `config.lr`; a whole-object problem (`config`) stays `config`."""
    return field if field == "config" or field.startswith("config.") else f"config.{field}"


def error_body(code: str, message: str, field: str | None = None,
               details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, "details": details}}


def error_response(status: int, code: str, message: str, field: str | None = None,
                   details: Any = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, field, details), status_code=status,
                        headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(str(p) for p in parts) or "body"


async def _streamguard_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StreamGuardError)
    status = status_for(exc)
    field = exc.field
    if isinstance(exc, InvalidTrainConfig) and field is not None:
        field = config_field(field)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, exc.code, exc.message, field, details_for(exc), headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid value"))
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            message = f"{message} (accepted: {ctx['expected']})"
        problems.append({"field": _field_path(err.get("loc", ())), "message": message,
                         "type": err.get("type")})
    first = problems[0] if problems else {"field": None, "message": "invalid request"}
    text = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    return error_response(422, "validation_error", f"invalid request: {text}", first["field"],
                          problems)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
             413: "payload_too_large"}
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    if exc.status_code == 404 and message == "Not Found":
        message = "no such route; the API lives under /v1 (see /docs for the routes)"
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message,
                          headers=dict(exc.headers or {}) or None)


def register_handlers(app: FastAPI) -> None:
    """Install the handlers; one shape for every error."""
    app.add_exception_handler(StreamGuardError, _streamguard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
