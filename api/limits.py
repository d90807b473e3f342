"""Request-body limits, enforced while the body is read (pure ASGI, no buffering past them).

`BodyLimitMiddleware` counts every body as it arrives: JSON bodies up to `api.max_json_bytes`
(then their nesting and text are checked), uploads up to `api.max_upload_mb`. Part of the edge
that `api.middleware.install_edge` wires.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate, repeat
from operator import sub
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import UPLOAD_FIELD, error_response, is_upload

#: Room for the multipart boundaries and the small form fields around the uploaded file.
MULTIPART_OVERHEAD = 64 * 1024
MIB = 1024 * 1024
#: C0 and C1 control characters and DEL: never part of an id or a name.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
#: One JSON string token, closed or running to the end of the text. Atomic and possessive, so
#: stripping strings is linear even for a hostile unterminated `"\"\"\"...`.
_JSON_STRING_RE = re.compile(r'"(?>[^"\\]+|\\.|\\\Z)*+(?:"|\Z)', re.S)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = str.maketrans({"[": "\x02", "{": "\x02", "]": "\x00", "}": "\x00"})
#: JSON bodies that carry source code (`POST /v1/jobs/{id}/predict`): tabs, line breaks and form
#: feeds are part of a function's text there; every other control character is still refused.
SOURCE_TEXT_PATH_RE = re.compile(r"^/v1/jobs/[^/]+/predict$")
_SOURCE_WHITESPACE = str.maketrans("", "", "\t\n\r\f\v")


# --- body limits ---------------------------------------------------------------------------------

def json_too_deep(text: str, max_depth: int) -> bool:
    """Whether arrays/objects nest deeper than `max_depth` (strings are skipped; linear time).

    Counts like a JSON parser up to its first error, so a body passing here cannot make
    `json.loads` recurse deeper than `max_depth`.
    """
    brackets = _NOT_BRACKET_RE.sub("", _JSON_STRING_RE.sub("", text))
    steps = brackets.translate(_BRACKET_STEP).encode("latin-1")  # 2 opens, 0 closes
    return max(accumulate(map(sub, steps, repeat(1))), default=0) > max_depth


def control_character_field(value: Any, *, source_text: bool = False) -> str | None:
    """The dotted field of the first string (or key) in a decoded JSON body holding a control
    character, `body` for a top-level string; None when there is none. With `source_text`,
    string values may hold tabs, line breaks and form feeds (keys still may not)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:  # iterative: the depth is bounded, but not by Python's recursion limit
        item, path = stack.pop()
        if isinstance(item, str):
            if CONTROL_RE.search(item.translate(_SOURCE_WHITESPACE) if source_text else item):
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
        source_text = SOURCE_TEXT_PATH_RE.match(scope["path"]) is not None
        problem = (self._json_problem(body, source_text=source_text) if is_json and body
                   else None)
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

    def _json_problem(self, body: bytes, *, source_text: bool = False
                      ) -> tuple[str, str] | None:
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
        field = control_character_field(value, source_text=source_text)
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


