"""The API's edge: request ids, body limits, the catch-all 500, text checks, CORS, log redaction.

`install_edge(app, settings)` wires it all (before the routers are included). The middleware is
pure ASGI (no `BaseHTTPMiddleware`: it would buffer and re-task every request); outermost first:

    RequestIdMiddleware   X-Request-ID on every response (a sane incoming one is echoed)
    MetricsMiddleware     (api.metrics) counts and times requests by route template and status
    CORS                  only when `api.cors_origins` is set (refusals in the error shape)
    CatchAllMiddleware    any unexpected exception: logged with the request id, 500 in the shape
    BodyLimitMiddleware   (api.limits) body size counted WHILE READING (413), JSON nesting
                          and text (422)

plus a dependency on every route refusing control characters (and over-long values) in path
parameters and form fields, and a logging filter that keeps query strings (where a client may
put an API key) out of uvicorn's access log.
"""

from __future__ import annotations

import logging
import re

from fastapi import Depends, FastAPI, Request
from starlette.datastructures import Headers, UploadFile
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import (
    LOGGED_SCOPE_KEY,
    REQUEST_ID_HEADER,
    REQUEST_ID_SCOPE_KEY,
    UPLOAD_FIELD,
    InvalidRequest,
    error_response,
    internal_error_response,
    is_upload,
    log_unexpected,
    new_request_id,
)
from api.limits import CONTROL_RE, MIB, MULTIPART_OVERHEAD, BodyLimitMiddleware
from api.metrics import ApiMetrics, MetricsMiddleware
from streamguard.logs import request_id_var, tenant_var
from streamguard.settings import Settings

#: An incoming X-Request-ID is echoed only when it looks like an id (else a new one is made).
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: Path parameters are ids and checkpoint names; anything longer is not one of ours.
MAX_PATH_PARAM_CHARS = 128
#: Same as the `name` columns; a longer file name would be stored as the dataset's name.
MAX_FILENAME_CHARS = 200


# --- request id ----------------------------------------------------------------------------------

class RequestIdMiddleware:
    """Give every request an id (a sane incoming `X-Request-ID`, else a new one), keep it in
    the scope and the context for error bodies and logs, and send it on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = incoming if incoming and REQUEST_ID_RE.fullmatch(incoming) \
            else new_request_id()
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if all(name.lower() != header[0] for name, _ in headers):
                    headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        token = request_id_var.set(request_id)
        tenant_token = tenant_var.set(None)  # the auth dependency sets it (for the logs)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            tenant_var.reset(tenant_token)
            request_id_var.reset(token)


# --- catch-all -----------------------------------------------------------------------------------

class CatchAllMiddleware:
    """Answer any exception that no handler took as a 500 in the error shape, logged once with
    its traceback and the request id. Inside CORS, so browsers can read that answer too.

    After the response has started nothing can be answered: the exception goes on to the
    server (which drops the connection), marked as logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            return  # the client left mid-body: no one to answer, nothing went wrong here
        except Exception as exc:
            request_id = scope.get(REQUEST_ID_SCOPE_KEY) or new_request_id()
            log_unexpected(exc, scope, request_id)
            scope[LOGGED_SCOPE_KEY] = True
            if started:
                raise
            await internal_error_response(request_id)(scope, receive, send)


# --- text in ids and names ---------------------------------------------------------------------

def _refuse_text(field: str, value: str, *, max_chars: int | None = None) -> None:
    if CONTROL_RE.search(value):
        raise InvalidRequest(f"{field}: control characters (U+0000 to U+001F, U+007F to U+009F)"
                             " are not accepted; send printable text", field=field)
    if max_chars is not None and len(value) > max_chars:
        raise InvalidRequest(f"{field}: at most {max_chars} characters are accepted "
                             f"(got {len(value)})", field=field)


async def check_text_inputs(request: Request) -> None:
    """Refuse control characters in path parameters (ids, checkpoint names; over-long ones
    too) and form fields (the dataset name, the uploaded file's name). Query values are typed
    (numbers, enums) or a cursor, which the cursor decoder refuses as `invalid_cursor`.

    Runs before every other dependency of every route, so a NUL never reaches the database.
    FastAPI has parsed a form body before dependencies run; `request.form()` returns it.
    """
    for name, value in request.path_params.items():
        if isinstance(value, str):
            _refuse_text(name, value, max_chars=MAX_PATH_PARAM_CHARS)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if is_upload(request.scope) and media in ("multipart/form-data",
                                              "application/x-www-form-urlencoded"):
        form = await request.form()
        for name, item in form.multi_items():  # the form's own fields; extra ones are ignored
            if name == UPLOAD_FIELD and isinstance(item, UploadFile):
                _refuse_text(UPLOAD_FIELD, item.filename or "", max_chars=MAX_FILENAME_CHARS)
            elif name == "name" and isinstance(item, str):
                _refuse_text(name, item)


# --- access log ----------------------------------------------------------------------------------

class RedactQueryFilter(logging.Filter):
    """Drop query strings from uvicorn's access log lines: a client may put an API key (or a
    presigned signature) there, and keys are never written to a log, not even refused ones.

    uvicorn logs `'%s - "%s %s HTTP/%s" %d'` with the path (and query) as an argument; every
    string argument is cut at its `?`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_query(a) if isinstance(a, str) else a
                                for a in record.args)
        elif isinstance(record.msg, str) and not record.args:
            record.msg = re.sub(r'(" ?[A-Z]+ [^?" ]*)\?[^" ]*', r"\1?<redacted>", record.msg)
        return True


def _redact_query(value: str) -> str:
    path, sep, _query = value.partition("?")
    return f"{path}?<redacted>" if sep else value


ACCESS_LOGGER = "uvicorn.access"


def install_log_redaction() -> None:
    """Add `RedactQueryFilter` to uvicorn's access logger (once per process)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQueryFilter) for f in logger.filters):
        logger.addFilter(RedactQueryFilter())


# --- CORS ----------------------------------------------------------------------------------------

#: The request header behind each preflight failure Starlette names.
_CORS_FIELDS = {"origin": "Origin", "method": "Access-Control-Request-Method",
                "headers": "Access-Control-Request-Headers",
                "private-network": "Access-Control-Request-Private-Network"}


class ErrorShapeCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in the error shape (not text)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        text = bytes(response.body).decode()
        failures = text.removeprefix("Disallowed CORS ").split(", ")
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "content-type")}
        return error_response(
            400, "cors_refused", f"CORS preflight refused: {', '.join(failures)} not allowed "
            "(this deployment's api.cors_origins and the API's methods and headers)",
            _CORS_FIELDS.get(failures[0]),
            [{"field": _CORS_FIELDS.get(f), "message": f"{f} not allowed"} for f in failures],
            headers=headers)


# --- wiring --------------------------------------------------------------------------------------

def install_edge(app: FastAPI, settings: Settings) -> None:
    """Middleware, the text-checking dependency and log redaction; call before the routers
    are included (the dependency reaches the routes included after it)."""
    api = settings.api
    app.router.dependencies.append(Depends(check_text_inputs))
    # add_middleware puts each one outside the ones before it: innermost first.
    app.add_middleware(BodyLimitMiddleware, max_json_bytes=api.max_json_bytes,
                       max_upload_bytes=api.max_upload_mb * MIB + MULTIPART_OVERHEAD,
                       max_upload_mb=api.max_upload_mb, max_json_depth=api.max_json_depth)
    app.add_middleware(CatchAllMiddleware)
    if api.cors_origins:
        app.add_middleware(
            ErrorShapeCORSMiddleware, allow_origins=list(api.cors_origins), allow_credentials=False,
            allow_methods=["GET", "HEAD", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID",
                           REQUEST_ID_HEADER, "Range"],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After", "Content-Disposition",
                            "Content-Range", "Accept-Ranges", "Location"],
            max_age=600)
    if api.metrics:
        app.state.metrics = metrics = ApiMetrics()
        app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)
    install_log_redaction()


