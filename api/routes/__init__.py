"""HTTP routers: parsing, auth, status codes and response models only (no SQL, no rules)."""

from __future__ import annotations

from typing import Any

from api.schemas import ErrorResponse

ERROR_TEXT = {
    400: "Malformed request (e.g. a broken multipart body)", 401: "Missing or invalid API key",
    404: "Not found (or not yours)",
    405: "Method not allowed; the `Allow` header lists the methods of the path",
    409: "Conflict with the current state", 413: "Body or upload over its size limit",
    415: "Unsupported content type", 416: "Range not satisfiable",
    422: "Invalid request; `error.field` names the field",
    429: "Too many requests; retry after `Retry-After` seconds",
    500: "Unexpected server error; quote `error.request_id`", 502: "Object store failed",
    503: "A dependency is unavailable",
}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.",
                               "schema": {"type": "integer", "minimum": 0}}}
REQUEST_ID = {"X-Request-ID": {"description": "The request's id (also in error bodies and "
                                              "the server log).",
                               "schema": {"type": "string"}}}

#: Every authenticated route can answer these.
AUTHED = (401, 422, 429, 500)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries: the shared error shape for each status code."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {"model": ErrorResponse, "description": ERROR_TEXT[code]}
        headers = dict(REQUEST_ID)
        if code in (429, 503):
            headers |= RETRY_AFTER
        if code == 401:
            headers["WWW-Authenticate"] = {"schema": {"type": "string"},
                                           "description": "`Bearer`"}
        entry["headers"] = headers
        out[code] = entry
    return out
