"""HTTP routers: parsing, auth, status codes and response models only (no SQL, no rules)."""

from __future__ import annotations

from typing import Any

from api.schemas import ErrorResponse


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the shared error shape."""
    text = {400: "Bad request", 401: "Missing or invalid API key", 404: "Not found (or not "
            "yours)", 409: "Conflict with the current state", 413: "Upload too large",
            422: "Invalid request; `error.field` names the field", 502: "Object store failed",
            503: "A dependency is unavailable"}
    return {code: {"model": ErrorResponse, "description": text.get(code, "Error")}
            for code in codes}
