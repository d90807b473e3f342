"""API-level errors and the one place that maps every error to HTTP.

Every error answers the same JSON shape (`api.schemas.ErrorResponse`)::

    {"error": {"code": "...", "message": "...", "field": "config.lr" | null,
               "details": [{"field": ..., "message": ..., "line": ...}] | null,
               "request_id": "..."}}

`field` is always a dotted field name (`body` for a body that is not valid JSON, `file` for
anything about an upload); `details` lists every problem found, or is null. Services raise
`StreamGuardError` subclasses (never `HTTPException`); `register_handlers` turns them, FastAPI's
`RequestValidationError`, Starlette's `HTTPException` and any unexpected exception (500, logged
with its traceback and the request id) into that shape.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import Scope

from api.schemas import ErrorDetail, ErrorItem, ErrorResponse
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
    TooManyRequests,
)
from streamguard.logs import request_id_var
from streamguard.storage import ArtifactNotFound

log = logging.getLogger(__name__)

# --- errors raised by the API services -------------------------------------------------------


class Unauthorized(StreamGuardError):
    """Missing, malformed or unknown API key."""

    code = "unauthorized"


class InvalidRequest(StreamGuardError):
    """A request field is well-formed but unacceptable (a foreign dataset, a bad URI, ...)."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None,
                 details: list[ErrorItem] | None = None) -> None:
        super().__init__(message, field=field)
        self.details = details


class PayloadTooLarge(StreamGuardError):
    """A request body above its limit (`api.max_upload_mb`, `api.max_json_bytes`)."""

    code = "payload_too_large"


class CheckpointNotFound(StreamGuardError):
    """No checkpoint of that name for the job; the message lists the available names."""

    code = "not_found"


class IdempotencyConflict(StreamGuardError):
    """The Idempotency-Key was used before with a different request body."""

    code = "idempotency_conflict"


class QueueUnavailable(StreamGuardError):
    """The broker refused the task; the job was not stored (retry the request)."""

    code = "queue_unavailable"


class NotReady(StreamGuardError):
    """A readiness check failed; `details` holds every check: `{name: {ok, detail}}`."""

    code = "not_ready"

    def __init__(self, message: str, *, details: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__(message)
        self.details = details


# --- the request id ----------------------------------------------------------------------------

#: Where `api.middleware.RequestIdMiddleware` keeps the request's id in the ASGI scope.
REQUEST_ID_SCOPE_KEY = "streamguard.request_id"
REQUEST_ID_HEADER = "X-Request-ID"
#: Set in the scope once an unexpected exception was logged, so it is logged once.
LOGGED_SCOPE_KEY = "streamguard.error_logged"
# `request_id_var` (streamguard.logs): the id of the request being handled, set by the
# middleware, read by every error response and by the JSON log formatter.


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_of(scope: Scope | None = None) -> str | None:
    """The current request's id: from `scope` when given and set, else from the context."""
    if scope is not None and isinstance(scope.get(REQUEST_ID_SCOPE_KEY), str):
        return str(scope[REQUEST_ID_SCOPE_KEY])
    return request_id_var.get()


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
    (TooManyRequests, 429),
    (QueueUnavailable, 503),
    (NotReady, 503),
]
#: StorageError about the request itself (a bad key or URI) is the client's; the rest is upstream.
CLIENT_STORAGE_FIELDS = frozenset({"key", "uri", "bucket"})
IDEMPOTENCY_FIELD = "Idempotency-Key"
#: The one field name of every problem with an uploaded file (its bytes, lines or name).
UPLOAD_FIELD = "file"
#: Routes whose body is a multipart upload.
UPLOAD_PATHS = frozenset({"/v1/datasets"})
#: Request-part prefixes FastAPI puts in front of a field's location.
LOCATION_PREFIXES = frozenset({"body", "query", "path", "header", "cookie", "form"})
#: Header names as clients write them (FastAPI reports them lower-cased).
HEADER_NAMES = {"idempotency-key": IDEMPOTENCY_FIELD, "last-event-id": "Last-Event-ID",
                "x-request-id": REQUEST_ID_HEADER}


def is_upload(scope: Scope) -> bool:
    """The dataset upload (multipart, `api.max_upload_mb`) rather than a JSON request."""
    return scope.get("method") == "POST" and str(scope.get("path", "")).rstrip("/") in UPLOAD_PATHS


def body_field(scope: Scope) -> str:
    """The field named by an error about the request's body as a whole."""
    return UPLOAD_FIELD if is_upload(scope) else "body"


def status_for(exc: StreamGuardError) -> int:
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    if isinstance(exc, StorageError):
        return 400 if exc.field in CLIENT_STORAGE_FIELDS else 502
    return 400


def field_for(exc: StreamGuardError) -> str | None:
    """The dotted field name of the error (`config.<f>`, `file`, `Idempotency-Key`, ...)."""
    if isinstance(exc, InvalidTrainConfig):
        return config_field(exc.field) if exc.field is not None else "config"
    if isinstance(exc, DataError):
        return UPLOAD_FIELD if exc.field in (None, "dataset") else exc.field
    if isinstance(exc, DuplicateIdempotencyKey | IdempotencyConflict):
        return IDEMPOTENCY_FIELD
    return exc.field


def details_for(exc: StreamGuardError) -> list[ErrorItem] | None:
    """Every problem of the error as `ErrorItem`s, or None when the message says it all."""
    if isinstance(exc, InvalidTrainConfig):
        return [item(field=config_field(p["field"]), message=p["message"])
                for p in exc.problems]
    if isinstance(exc, DataError):
        field = field_for(exc)
        return [item(field=field, message=why, line=line if line > 0 else None)
                for line, why in exc.problems]
    if isinstance(exc, DuplicateIdempotencyKey):
        return [item(field=IDEMPOTENCY_FIELD,
                          message=f"already used by job {exc.job_id}; GET /v1/jobs/{exc.job_id}")]
    if isinstance(exc, IdempotencyConflict):
        return [item(field=IDEMPOTENCY_FIELD, message=exc.message)]  # it names the job
    if isinstance(exc, NotReady):
        return [item(field=name, message=("ok: " if check.get("ok") else "failed: ")
                          + str(check.get("detail", "")))
                for name, check in exc.details.items()]
    details = getattr(exc, "details", None)
    return list(details) if details else None


def item(*, field: str | None, message: str, line: int | None = None) -> ErrorItem:
    """One `ErrorItem` (keyword-only, so every call names what it fills)."""
    return ErrorItem(field=field, message=message, line=line)


def config_field(field: str) -> str:
    """`lr` -> `config.lr`; a whole-object problem (`config`) stays `config`."""
    return field if field == "config" or field.startswith("config.") else f"config.{field}"


def error_body(code: str, message: str, field: str | None = None,
               details: Iterable[ErrorItem | Mapping[str, Any]] | None = None,
               request_id: str | None = None) -> dict[str, Any]:
    """The `ErrorResponse` JSON; `details` items are validated into `ErrorItem`s."""
    items = None if details is None else [
        entry if isinstance(entry, ErrorItem) else ErrorItem.model_validate(entry)
        for entry in details]
    detail = ErrorDetail(code=code, message=message, field=field, details=items or None,
                         request_id=request_id or request_id_of())
    return ErrorResponse(error=detail).model_dump(mode="json")


def error_response(status: int, code: str, message: str, field: str | None = None,
                   details: Iterable[ErrorItem | Mapping[str, Any]] | None = None,
                   headers: Mapping[str, str] | None = None, *,
                   request_id: str | None = None) -> JSONResponse:
    request_id = request_id or request_id_of()
    all_headers = dict(headers or {})
    if request_id is not None:
        all_headers.setdefault(REQUEST_ID_HEADER, request_id)
    return JSONResponse(error_body(code, message, field, details, request_id),
                        status_code=status, headers=all_headers or None)


def internal_error_response(request_id: str) -> JSONResponse:
    """The 500 of any unexpected exception: no exception text (it may name server paths)."""
    return error_response(500, "internal_error", "internal server error; it was logged with "
                          f"request id {request_id}: quote it when reporting the problem",
                          request_id=request_id)


def log_unexpected(exc: BaseException, scope: Scope, request_id: str) -> None:
    """Log the traceback with the request id (never the query string: it may hold a key)."""
    log.error("unhandled %s on %s %s [request_id=%s]", type(exc).__name__,
              scope.get("method", "?"), scope.get("path", "?"), request_id, exc_info=exc)


# --- handlers ----------------------------------------------------------------------------------

#: Tags pydantic puts in a location for the member of a union an error is about.
UNION_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "dict", "list", "none", "any",
                        "datetime", "date", "uuid", "decimal"})


def field_path(loc: Iterable[Any], *, keep_last: bool = False) -> str:
    """FastAPI/pydantic location -> dotted field name, without the request-part prefix and
    without pydantic's union-member tags (`int`, `list[int]`, `constrained-str`, a model's
    class name). `keep_last` keeps the last part whatever it is (an unknown key the client
    sent, for `extra_forbidden`)."""
    parts = list(loc)
    kind = parts[0] if parts and parts[0] in LOCATION_PREFIXES else None
    if kind is not None:
        parts = parts[1:]
    if kind == "header" and parts:
        name = str(parts[0]).lower()
        return HEADER_NAMES.get(name, "-".join(w.capitalize() for w in name.split("-")))
    last = [str(parts.pop())] if keep_last and parts else []
    names = [str(p) for p in parts if isinstance(p, int) or _is_field_name(str(p))]
    return ".".join(names + last) or "body"


def _is_field_name(part: str) -> bool:
    # Field names here are snake_case; union tags are type names, type expressions
    # (`list[int]`, `function-after[...]`, `constrained-str`) or model class names.
    return part.isidentifier() and not part[:1].isupper() and part not in UNION_TAGS


def _json_position(doc: Any, pos: int) -> str:
    if isinstance(doc, bytes):
        doc = doc.decode("utf-8", "replace")
    if not isinstance(doc, str):
        return f"at character {pos}"
    line = doc.count("\n", 0, pos) + 1
    column = pos - doc.rfind("\n", 0, pos)
    return f"at line {line} column {column} (character {pos})"


def _validation_item(err: Mapping[str, Any], body: Any) -> ErrorItem:
    loc = tuple(err.get("loc", ()))
    ctx = err.get("ctx") or {}
    if err.get("type") == "json_invalid":
        pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        return item(field="body", message=f"malformed JSON: {ctx.get('error', 'invalid')} "
                                               f"{_json_position(body, pos)}")
    message = str(err.get("msg", "invalid value"))
    if "expected" in ctx:
        message = f"{message} (accepted: {ctx['expected']})"
    return item(field=field_path(loc, keep_last=err.get("type") == "extra_forbidden"),
                message=message)


async def _streamguard_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StreamGuardError)
    status = status_for(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(exc.retry_after_s)
    return error_response(status, exc.code, exc.message, field_for(exc), details_for(exc),
                          headers, request_id=request_id_of(request.scope))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [_validation_item(err, exc.body) for err in exc.errors()]
    if not items:
        items = [item(field="body", message="invalid request")]
    text = "; ".join(f"{item.field}: {item.message}" for item in items)
    return error_response(422, "validation_error", f"invalid request: {text}", items[0].field,
                          items, request_id=request_id_of(request.scope))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    codes = {400: "bad_request", 401: "unauthorized", 404: "not_found",
             405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}
    status = exc.status_code
    message = exc.detail if isinstance(exc.detail, str) else "request failed"
    field = None
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}
    if status == 404 and message == "Not Found":
        message = "no such route; the API lives under /v1 (see /docs for the routes)"
    elif status == 405:
        # Starlette's Allow names the methods of the first route matching the path only.
        allowed = allowed_methods(request)
        headers["Allow"] = ", ".join(allowed)
        message = f"method {request.method} is not allowed here; allowed: {', '.join(allowed)}"
    elif status == 400 and isinstance(exc.__cause__, ValueError | RecursionError):
        # FastAPI's "error parsing the body" for what json.loads refuses without a
        # JSONDecodeError: bytes that are not UTF-8, nesting deeper than Python recurses.
        cause = exc.__cause__
        why = ("not valid UTF-8" if isinstance(cause, UnicodeDecodeError)
               else "nested too deeply" if isinstance(cause, RecursionError) else str(cause))
        return error_response(422, "validation_error", f"malformed JSON body: {why}", "body",
                              [item(field="body", message=f"malformed JSON: {why}")],
                              request_id=request_id_of(request.scope))
    if status in (400, 413, 415):
        field = body_field(request.scope)
    return error_response(status, codes.get(status, "http_error"), message, field,
                          headers=headers, request_id=request_id_of(request.scope))


#: Methods worth probing for `Allow` (HEAD comes with GET).
PROBED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes on this path, for `Allow` (Starlette's names
    only the first route matching the path). Asked of the routes through `matches`, with a
    bare scope per method, so included routers are covered whatever their structure."""
    allowed = []
    for method in PROBED_METHODS:
        probe: Scope = {"type": "http", "method": method, "path": request.scope["path"],
                        "root_path": request.scope.get("root_path", ""), "headers": [],
                        "query_string": b""}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return allowed


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's ServerErrorMiddleware calls this for what escaped every other layer
    (`api.middleware.CatchAllMiddleware` answers most of them before they get there)."""
    request_id = request_id_of(request.scope) or new_request_id()
    if not request.scope.get(LOGGED_SCOPE_KEY):
        log_unexpected(exc, request.scope, request_id)
    return internal_error_response(request_id)


def register_handlers(app: FastAPI) -> None:
    """Install the handlers; one shape for every error."""
    app.add_exception_handler(StreamGuardError, _streamguard_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
