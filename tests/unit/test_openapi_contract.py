"""The published contract: docs/openapi.json is what the app serves, and is typed for clients.

Regenerate with `make openapi` after a deliberate change of the HTTP contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from api.main import create_app
from streamguard.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("openapi"))
    return create_app(settings).openapi()


def test_checked_in_document_matches_the_app(served: dict[str, Any]) -> None:
    stored = json.loads(DOC.read_text())
    assert stored == json.loads(json.dumps(served)), (
        "docs/openapi.json is stale: run `make openapi` and review the diff")


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def test_operations_are_named_and_errors_share_one_shape(served: dict[str, Any]) -> None:
    ids = []
    for path, ops in served["paths"].items():
        for method, op in ops.items():
            ids.append(op["operationId"])
            assert "_" not in op["operationId"], (method, path, op["operationId"])
            for status, response in op["responses"].items():
                if status[0] in "45":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("/ErrorResponse"), (method, path, status)
            assert "500" in op["responses"], (method, path)
    assert len(ids) == len(set(ids))
    assert {"createJob", "listJobs", "getJob", "cancelJob", "listJobMetrics", "streamJobEvents",
            "listJobEvents", "listCheckpoints", "downloadCheckpoint", "uploadDataset",
            "listDatasets", "getDataset"} <= set(ids)
    schemas = served["components"]["schemas"]
    assert not [n for n in schemas if n.startswith("Body_") or "Type0" in n or n.endswith("Get")]
    assert "HTTPValidationError" not in schemas


def test_no_untyped_values(served: dict[str, Any]) -> None:
    """Every property has a type, a $ref or a union of those: no `Any` in the contract."""
    for name, schema in served["components"]["schemas"].items():
        for prop, spec in schema.get("properties", {}).items():
            typed = {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"} & set(spec)
            assert typed, f"{name}.{prop} is untyped: {spec}"
            if spec.get("type") == "object":
                assert "properties" in spec or "additionalProperties" in spec, (name, prop)


def test_client_facing_details(served: dict[str, Any]) -> None:
    paths = served["paths"]
    upload = served["components"]["schemas"]["DatasetUpload"]["properties"]["file"]
    assert upload == upload | {"type": "string", "format": "binary"}
    sse = paths["/v1/jobs/{job_id}/events"]["get"]
    assert set(sse["responses"]["200"]["content"]) == {"text/event-stream"}
    header = next(p for p in sse["parameters"] if p["in"] == "header")
    assert header["name"].lower() == "last-event-id" and header["schema"]["type"] == "string"
    download = paths["/v1/jobs/{job_id}/checkpoints/{name}/download"]
    assert "head" in download and "206" in download["get"]["responses"]
    assert any(p["name"] == "range" for p in download["get"]["parameters"])
    datasets = served["components"]["schemas"]["JobDatasets"]["properties"]
    assert [r["$ref"].rsplit("/", 1)[1] for r in datasets["train"]["oneOf"]] == [
        "DatasetIdRef", "DatasetUriRef"]
    limit = next(p for p in paths["/v1/jobs"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 200
    model = served["components"]["schemas"]["JobConfig"]["properties"]["model"]
    assert model["maxLength"] == 200 and "pattern" in model
