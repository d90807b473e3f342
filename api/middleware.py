"""The API's edge: request ids, body limits, the catch-all 500, text checks, CORS, log redaction.

`install_edge(app, settings)` wires it all (before the routers are included). The middleware is
pure ASGI (no `BaseHTTPMiddleware`: it would buffer and re-task every request); outermost first:

    RequestIdMiddleware   X-Request-ID on every response (a sane incoming one is echoed)
    CORS                  only when `api.cors_origins` is set (refusals in the error shape)
    CatchAllMiddleware    any unexpected exception: logged with the request id, 500 in the shape
    BodyLimitMiddleware   body size counted WHILE READING (413), JSON nesting and text (422)

plus a dependency on every route refusing control characters (and over-long values) in path
parameters and form fields, and a logging filter that keeps query strings (where a client may
put an API key) out of uvicorn's access log.
"""

from __future__ import annotations

import json
import logging
import re
from itertools import accumulate, repeat
from operator import sub
from typing import Any

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
    request_id_var,
)
from streamguard.settings import Settings

#: Room for the multipart boundaries and the small form fields around the uploaded file.
MULTIPART_OVERHEAD = 64 * 1024
MIB = 1024 * 1024
#: An incoming X-Request-ID is echoed only when it looks like an id (else a new one is made).
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: C0 and C1 control characters and DEL: never part of an id or a name.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: Path parameters are ids and checkpoint names; anything longer is not one of ours.
MAX_PATH_PARAM_CHARS = 128
#: Same as the `name` columns; a longer file name would be stored as the dataset's name.
MAX_FILENAME_CHARS = 200
#: One JSON string token, closed or running to the end of the text. Atomic and possessive, so
#: stripping strings is linear even for a hostile unterminated `"\"\"\"...`.
_JSON_STRING_RE = re.compile(r'"(?>[^"\\]+|\\.|\\\Z)*+(?:"|\Z)', re.S)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})


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
        try:
            await self.app(scope, receive, send_with_id)
        finally:
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


# --- body limits ---------------------------------------------------------------------------------

def json_too_deep(text: str, max_depth: int) -> bool:
    """Whether arrays/objects nest deeper than `max_depth` (strings are skipped; linear time).

    Counts like a JSON parser up to its first error, so a body passing here cannot make
    `json.loads` recurse deeper than `max_depth`.
    """
    brackets = _NOT_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text))
    steps = brackets.translate(_BRACKET_STEP).encode("latin-1")  # 2 opens, 0 closes
    return max(accumulate(map(sub, steps, repeat(1))), default=0) > max_depth


def control_character_field(value: Any) -> str | None:
    """The dotted field of the first string (or key) in a decoded JSON body holding a control
    character, `body` for a top-level string; None when there is none."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:  # iterative: the depth is bounded, but not by Python's recursion limit
        item, path = stack.pop()
        if isinstance(item, str):
            if CONTROL_RE.search(item):
                return ".".join(path) or "body"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if CONTROL_RE.search(key):
                    return ".".join(path) or "body"
                stack.append((child, (*path, key)))
        elif isinstance(item, list):
            stack.extend((child, (*path, str(i))) for i, child in reversed(list(enumerate(item))))
    return None


def _is_json(headers: Headers) -> bool:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media in ("", "application/json") or media.endswith("+json")


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.strip().isdigit() else None


class _BodyTooLarge(Exception):
    """Raised by the counting `receive` of an upload once the limit is passed."""


class BodyLimitMiddleware:
    """A size limit on every request body, enforced while reading it.

    - A declared Content-Length over the limit is answered 413 before a byte is read.
    - A JSON (non-upload) body is read up to `max_json_bytes` (413 past it), its nesting and
      text checked (422), then handed on in one piece.
    - An upload (`POST /v1/datasets`) streams through a counting `receive`; past
      `max_upload_bytes` it raises, the app's own answer is dropped and 413 is sent instead,
      so the multipart parser never spools more than the limit.

    413s carry `Connection: close`: the server stops reading the rest of the body.
    """

    def __init__(self, app: ASGIApp, *, max_json_bytes: int, max_upload_bytes: int,
                 max_upload_mb: int, max_json_depth: int) -> None:
        self.app = app
        self.max_json_bytes = max_json_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_upload_mb = max_upload_mb
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        upload = is_upload(scope)
        limit = self.max_upload_bytes if upload else self.max_json_bytes
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            await self._too_large(upload, scope, receive, send)
        elif upload:
            await self._stream(scope, receive, send)
        elif declared or "transfer-encoding" in headers:
            await self._buffer(scope, receive, send, is_json=_is_json(headers))
        else:
            await self.app(scope, receive, send)

    async def _too_large(self, upload: bool, scope: Scope, receive: Receive,
                         send: Send) -> None:
        if upload:
            message = (f"the upload is larger than {self.max_upload_mb} MiB, this deployment's "
                       "upload limit (api.max_upload_mb); split the file")
        else:
            message = (f"the request body is larger than {self.max_json_bytes} bytes, this "
                       "deployment's limit for JSON bodies (api.max_json_bytes)")
        response = error_response(413, "payload_too_large", message,
                                  UPLOAD_FIELD if upload else "body",
                                  headers={"Connection": "close"})
        await response(scope, receive, send)

    async def _buffer(self, scope: Scope, receive: Receive, send: Send, *,
                      is_json: bool) -> None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left; there is nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_json_bytes:
                await self._too_large(False, scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = self._json_problem(body) if is_json and body else None
        if problem is not None:
            field, text = problem
            await error_response(422, "validation_error", f"invalid request: {field}: {text}",
                                 field, [{"field": field, "message": text}])(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # e.g. http.disconnect, for streaming responses

        await self.app(scope, replay, send)

    def _json_problem(self, body: bytes) -> tuple[str, str] | None:
        """(field, message) for a JSON body nested too deeply or holding control characters.
        Malformed JSON is left to FastAPI, which reports the position."""
        try:
            text = body.decode(json.detect_encoding(body))
        except (UnicodeDecodeError, LookupError):
            return None
        if json_too_deep(text, self.max_json_depth):
            return "body", (f"JSON nested deeper than {self.max_json_depth} levels "
                            "(api.max_json_depth); no request of this API needs that")
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            return None
        field = control_character_field(value)
        if field is None:
            return None
        return field, ("control characters (U+0000 to U+001F, U+007F to U+009F) are not "
                       "accepted; send printable text")

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        size = 0
        exceeded = started = False

        async def counting_receive() -> Message:
            nonlocal size, exceeded
            if exceeded:
                raise _BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > self.max_upload_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                return  # the app's answer to the aborted read; the 413 below replaces it
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._too_large(True, scope, receive, send)


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
    if media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        form = await request.form()
        for name, item in form.multi_items():
            if isinstance(item, UploadFile):
                _refuse_text(UPLOAD_FIELD if name == UPLOAD_FIELD else name,
                             item.filename or "", max_chars=MAX_FILENAME_CHARS)
            else:
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
    app.add_middleware(RequestIdMiddleware)
    install_log_redaction()


