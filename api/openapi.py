"""The published OpenAPI document: FastAPI's, with the fixes generated clients need.

FastAPI names the upload form `Body_uploadDataset` and emits its file as `contentMediaType`
without `format: binary` (generators then send a string); it documents a 422 shape the API
never sends. `build_openapi` renames and corrects those, so that clients generated from
`docs/openapi.json` work as they are.
`python -m api.openapi > docs/openapi.json` writes the checked-in copy (a test compares).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

UPLOAD_FORM = "Body_uploadDataset"


def _rename(node: Any, old: str, new: str) -> Any:
    """Every `$ref` to schema `old` pointed at `new` instead."""
    if isinstance(node, dict):
        return {k: (f"#/components/schemas/{new}" if k == "$ref"
                    and v == f"#/components/schemas/{old}" else _rename(v, old, new))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_rename(v, old, new) for v in node]
    return node


def _plain_optional_parameters(doc: dict[str, Any]) -> None:
    """`anyOf: [X, null]` of an optional query/header parameter as plain X: an absent parameter
    is already "not required"; generators then type it `str`, not a union with None."""
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            for param in op.get("parameters", []):
                schema = param.get("schema", {})
                variants = schema.get("anyOf", [])
                rest = [v for v in variants if v.get("type") != "null"]
                if not param.get("required") and len(variants) == 2 and len(rest) == 1:
                    schema.pop("anyOf")
                    schema.update(rest[0])


def _deployment_limits(app: FastAPI, schemas: dict[str, Any]) -> None:
    """Limits that are settings, stated as this deployment enforces them."""
    settings = getattr(app.state, "settings", None)
    runtime = schemas.get("JobCreate", {}).get("properties", {}).get("max_runtime_s", {})
    if settings is None or not runtime:
        return
    for variant in runtime.get("anyOf", [runtime]):
        if variant.get("type") == "integer":
            variant["maximum"] = settings.worker.max_job_runtime_s


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, summary=app.summary,
                      description=app.description, routes=app.routes, tags=app.openapi_tags)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    if UPLOAD_FORM in schemas:
        form = schemas.pop(UPLOAD_FORM)
        form["title"] = "DatasetUpload"
        file_prop = form["properties"]["file"]
        file_prop.pop("contentMediaType", None)
        file_prop.update({"type": "string", "format": "binary"})
        schemas["DatasetUpload"] = form
        doc = _rename(doc, UPLOAD_FORM, "DatasetUpload")
        schemas = doc["components"]["schemas"]
    _plain_optional_parameters(doc)
    _deployment_limits(app, schemas)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    doc["components"]["securitySchemes"] = {"HTTPBearer": {
        "type": "http", "scheme": "bearer",
        "description": "An API key: `Authorization: Bearer sg_...`"}}
    return doc


def install(app: FastAPI) -> None:
    """Serve `build_openapi(app)` (built once, on first request) at /openapi.json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def main() -> None:
    from api.main import create_app
    from streamguard.settings import Settings

    app = create_app(Settings())
    sys.stdout.write(json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
