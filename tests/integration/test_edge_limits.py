"""The API's edge: body limits enforced while reading, JSON nesting, control characters in ids
and names, booleans that are not integers, `details` as one type, the catch-all 500, request
ids, CORS and keys kept out of the access log.

Most tests use the TestClient over real PostgreSQL (tests/integration/api_fixtures.py); what
only a server shows (memory while a 200 MB body is refused, a chunked upload stopped early,
uvicorn's access log) runs against a real uvicorn process on 127.0.0.1.

Run: .venv/bin/pytest -m integration tests/integration/test_edge_limits.py
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import details_for, error_body, field_path
from api.limits import control_character_field, json_too_deep
from api.main import create_app
from api.middleware import RedactQueryFilter
from api.schemas import ErrorResponse
from streamguard.db.jobs import DuplicateIdempotencyKey
from streamguard.errors import DataError, InvalidTrainConfig
from streamguard.settings import Settings
from tests.e2e.harness import Proc, api_cmd, base_env, free_port
from tests.integration import api_fixtures
from tests.integration.api_fixtures import ApiHarness, good_rows

# Fixtures from api_fixtures (integration/conftest.py is owned elsewhere).
api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions
api_fixture = api_fixtures.api_fixture  # the `api` fixture

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
HEX_ID = "0123456789abcdef" * 2


def error_of(response: Any) -> dict[str, Any]:  # TestClient or httpx responses
    """The error object, checked against ErrorResponse: exact keys, JSON, the request id."""
    assert response.headers["content-type"] == "application/json", response.headers
    body = response.json()
    ErrorResponse.model_validate(body)
    assert set(body) == {"error"}, body
    error = dict(body["error"])
    assert set(error) == {"code", "message", "field", "details", "request_id"}, body
    assert error["request_id"] == response.headers["x-request-id"]
    if error["details"] is not None:
        assert error["details"] and all(set(d) == {"field", "message", "line"}
                                        for d in error["details"]), error
    return error


def jobs_of(api: ApiHarness, tenant: str = "a") -> list[dict[str, Any]]:
    return list(api.client.get("/v1/jobs?limit=200", headers=api.auth(tenant)).json()["items"])


def datasets_of(api: ApiHarness, tenant: str = "a") -> list[dict[str, Any]]:
    return list(api.client.get("/v1/datasets", headers=api.auth(tenant)).json()["items"])


def post_json_bytes(api: ApiHarness, data: bytes | Iterator[bytes],
                    path: str = "/v1/jobs") -> Any:
    return api.client.post(path, content=data,
                           headers=api.auth() | {"Content-Type": "application/json"})


def multipart(parts: Sequence[tuple[str, str | None, bytes]], boundary: str = "sgtest") -> bytes:
    """A multipart/form-data body from (field, filename or None, bytes)."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else "")
        out += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


# --- request ids ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("incoming", "echoed"), [
    ("req-1.A_b", True), ("x" * 128, True),
    ("x" * 129, False), ("has space", False), ("semi;colon", False), ("", False),
])
def test_request_id_is_echoed_when_sane_else_generated(api: ApiHarness, incoming: str,
                                                       echoed: bool) -> None:
    headers = {"X-Request-ID": incoming} if incoming else {}
    ok = api.client.get("/healthz", headers=headers)
    missing = api.client.get("/v1/jobs/" + HEX_ID, headers=api.auth() | headers)
    for response in (ok, missing):
        request_id = response.headers["x-request-id"]
        if echoed:
            assert request_id == incoming
        else:
            assert request_id != incoming and len(request_id) == 32
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert api.client.get("/healthz").headers["x-request-id"] != \
        api.client.get("/healthz").headers["x-request-id"]


# --- body size -----------------------------------------------------------------------------------

def test_json_body_over_the_limit_is_413_declared_or_chunked(api: ApiHarness) -> None:
    limit = api.settings.api.max_json_bytes
    declared = post_json_bytes(api, b" " * (limit + 1))
    assert declared.status_code == 413 and declared.headers["connection"] == "close"
    error = error_of(declared)
    assert error["code"] == "payload_too_large" and error["field"] == "body"
    assert str(limit) in error["message"]

    read: list[int] = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for i in range(64):
            read.append(i)
            yield b" " * (64 * 1024)

    chunked = post_json_bytes(api, chunks())
    assert chunked.status_code == 413 and error_of(chunked)["field"] == "body"
    assert jobs_of(api) == []
    # A body at the limit is read and judged on its content.
    at_limit = post_json_bytes(api, b" " * (limit - 2) + b"{}")
    assert at_limit.status_code == 422 and error_of(at_limit)["field"] != "body"


def test_chunked_upload_over_the_limit_is_413_on_file(api: ApiHarness) -> None:
    line = (json.dumps({"func": "x" * 1000, "target": 1}) + "\n").encode()
    body = multipart([("file", "big.jsonl", line * (3 * MIB // len(line)))])

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 256 * 1024):
            yield body[i:i + 256 * 1024]

    response = api.client.post(
        "/v1/datasets", content=chunks(),
        headers=api.auth() | {"Content-Type": "multipart/form-data; boundary=sgtest"})
    assert response.status_code == 413, response.text
    error = error_of(response)
    assert error["field"] == "file" and "2 MiB" in error["message"]
    assert datasets_of(api) == []
    small = api.client.post(
        "/v1/datasets", content=multipart([("file", "ok.jsonl", line * 4 + line.replace(
            b'"target": 1', b'"target": 0'))]),
        headers=api.auth() | {"Content-Type": "multipart/form-data; boundary=sgtest"})
    assert small.status_code == 201, small.text


# --- JSON nesting and malformed JSON -------------------------------------------------------------

@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_deeply_nested_json_is_422_on_body(api: ApiHarness, depth: int) -> None:
    response = post_json_bytes(api, b"[" * depth + b"]" * depth)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["field"] == "body" and "nested deeper than 32" in error["message"]
    unclosed = post_json_bytes(api, b'{"name": ' + b"[" * depth)
    assert unclosed.status_code == 422 and error_of(unclosed)["field"] == "body"


def test_nesting_at_the_limit_reaches_validation(api: ApiHarness) -> None:
    body = api.job_body()
    nested: Any = "x"
    for _ in range(31):  # 31 arrays inside the top-level object: depth 32
        nested = [nested]
    body["name"] = nested
    response = api.client.post("/v1/jobs", json=body, headers=api.auth())
    assert response.status_code == 422
    assert error_of(response)["field"] == "name"  # judged by the schema, not the depth check


def test_depth_scanner_skips_strings_and_is_linear() -> None:
    assert not json_too_deep('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', 2)
    assert not json_too_deep('["\\"[[[[[[", ["\\\\"]]', 2)
    assert json_too_deep('[[["\\"]"]]]', 2)
    start = time.perf_counter()
    assert not json_too_deep('"' + '\\"' * 500_000, 32)  # unterminated, hostile escapes
    assert not json_too_deep('"a"' * 300_000, 32)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(("data", "where"), [
    (b'{"name": "x",', "line 1 column 14"),
    (b'{\n  "name": "x"\n  "datasets": {}\n}', "line 3 column 3"),
    (b"{'name': 'x'}", "line 1 column 2"),
])
def test_malformed_json_is_422_on_body_with_the_position(api: ApiHarness, data: bytes,
                                                         where: str) -> None:
    response = post_json_bytes(api, data)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["field"] == "body" and where in error["message"], error
    assert error["details"] == [{"field": "body", "message": error["details"][0]["message"],
                                 "line": None}]


def test_json_that_is_not_utf8_is_422_on_body(api: ApiHarness) -> None:
    response = post_json_bytes(api, b'{"name": "\xff\xfe"}')
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == "body"


def test_jsonl_line_nested_100k_deep_is_a_clean_data_error(api: ApiHarness) -> None:
    text = (json.dumps(good_rows(2)[0]) + "\n" + "[" * 100_000 + "\n"
            + json.dumps(good_rows(2)[1]) + "\n").encode()
    response = api.upload(text)
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["code"] == "invalid_dataset" and error["field"] == "file"
    assert error["details"] == [{"field": "file", "line": 2,
                                 "message": "invalid JSON (arrays/objects nested too deeply)"}]
    assert datasets_of(api) == []


# --- control characters in ids and names ---------------------------------------------------------

ID_ROUTES = [
    ("GET", "/v1/jobs/{}", "job_id"),
    ("POST", "/v1/jobs/{}/cancel", "job_id"),
    ("GET", "/v1/jobs/{}/metrics", "job_id"),
    ("GET", "/v1/jobs/{}/events", "job_id"),
    ("GET", "/v1/jobs/{}/checkpoints", "job_id"),
    ("GET", f"/v1/jobs/{HEX_ID}/checkpoints/{{}}/download", "name"),
    ("GET", "/v1/datasets/{}", "dataset_id"),
]


@pytest.mark.parametrize(("method", "template", "field"), ID_ROUTES)
@pytest.mark.parametrize("value", ["%00", "best%00", "ab%01cd", "a%1fb", "%7f", "a%C2%85b",
                                   "a" * 129])
def test_control_characters_or_overlong_path_ids_are_422(api: ApiHarness, method: str,
                                                         template: str, field: str,
                                                         value: str) -> None:
    response = api.client.request(method, template.format(value), headers=api.auth())
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["field"] == field and error["code"] == "invalid_request"


@pytest.mark.parametrize(("method", "template", "field"), ID_ROUTES)
@pytest.mark.parametrize("value", ["zz", "..%2F..%2Fetc", "a%20b", HEX_ID.upper(), "x" * 128])
def test_wrong_shaped_path_ids_are_422_on_the_id(api: ApiHarness, method: str, template: str,
                                                field: str, value: str) -> None:
    """The contract states the id shape (32 lowercase hex): anything else is refused naming the
    path parameter; an encoded `/` that makes the path another (unknown) route is a 404, and so
    is any checkpoint name of a job that does not exist (the job is looked up first)."""
    response = api.client.request(method, template.format(value), headers=api.auth())
    if ("%2F" in value or field == "name") and response.status_code == 404:
        assert error_of(response)["code"] == "not_found"
        return
    assert response.status_code == 422, (field, response.text)
    assert error_of(response)["field"] == field


@pytest.mark.parametrize("name", ["a\x00b", "tab\there", "line\nbreak", "del\x7f", "c1\x85"])
def test_control_characters_in_a_job_name_are_422_on_name(api: ApiHarness, name: str) -> None:
    response = api.client.post("/v1/jobs", json=api.job_body(name=name), headers=api.auth())
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == "name"
    nested = api.job_body()
    nested["datasets"]["train"] = {"dataset_id": "a\x00"}
    response = api.client.post("/v1/jobs", json=nested, headers=api.auth())
    assert response.status_code == 422
    assert error_of(response)["field"] == "datasets.train.dataset_id"
    assert jobs_of(api) == [] and api.enqueued == []


@pytest.mark.parametrize(("form", "filename", "field"), [
    ({"name": "a\x00b"}, "ok.jsonl", "name"),
    ({"name": "bell\x07"}, "ok.jsonl", "name"),
    ({}, "evil\x00.jsonl", "file"),
    ({}, "n" * 201 + ".jsonl", "file"),
])
def test_control_characters_in_upload_names_are_422(api: ApiHarness, form: dict[str, str],
                                                    filename: str, field: str) -> None:
    data = "".join(json.dumps(r) + "\n" for r in good_rows()).encode()
    # Written by hand: httpx would percent-encode a NUL in the file name.
    parts = [(k, None, v.encode()) for k, v in form.items()] + [("file", filename, data)]
    response = api.client.post(
        "/v1/datasets", content=multipart(parts),
        headers=api.auth() | {"Content-Type": "multipart/form-data; boundary=sgtest"})
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert datasets_of(api) == []


def test_control_characters_in_query_values_are_422_on_the_parameter(api: ApiHarness) -> None:
    for url, field in [("/v1/jobs?cursor=%00", "cursor"), ("/v1/datasets?cursor=a%0Ab", "cursor"),
                       ("/v1/datasets?limit=5%00", "limit"),
                       ("/v1/jobs?status=queued%00", "status")]:
        response = api.client.get(url, headers=api.auth())
        assert response.status_code == 422, (url, response.text)
        assert error_of(response)["field"] == field


def test_json_control_character_field_paths() -> None:
    assert control_character_field({"a": [{"b": "ok"}, {"c": "x\x00"}]}) == "a.1.c"
    assert control_character_field({"a\x01": 1}) == "body"
    assert control_character_field({"a": {"b\x02": 1}}) == "a"
    assert control_character_field("x\x1f") == "body"
    assert control_character_field({"a": "é ü ☃ \u2028"}) is None


# --- booleans are not integers ---------------------------------------------------------------

@pytest.mark.parametrize(("config", "field"), [
    ({"epochs": True}, "config.epochs"),
    ({"batch_size": False}, "config.batch_size"),
    ({"lr": True}, "config.lr"),
    ({"eval_batch_size": True}, "config.eval_batch_size"),
])
def test_booleans_are_not_numbers_in_the_config(api: ApiHarness, config: dict[str, Any],
                                                field: str) -> None:
    body = api.job_body()
    body["config"] |= config
    response = api.client.post("/v1/jobs", json=body, headers=api.auth())
    assert response.status_code == 422, response.text
    error = error_of(response)
    assert error["field"] == field and "boolean" in error["message"]
    assert jobs_of(api) == []
    assert api.client.get("/v1/jobs?limit=true", headers=api.auth()).status_code == 422
    good = api.job_body()
    good["config"] |= {"epochs": 3, "lr": 1}  # JSON ints still fill ints and floats
    assert api.client.post("/v1/jobs", json=good, headers=api.auth()).status_code == 201


# --- details: one type ---------------------------------------------------------------------------

def test_validation_errors_list_every_field(api: ApiHarness) -> None:
    body = api.job_body()
    body["config"] |= {"epochs": 0, "lr": -1.0}
    body["max_runtime_s"] = 1
    response = api.client.post("/v1/jobs", json=body, headers=api.auth())
    assert response.status_code == 422
    error = error_of(response)
    fields = {d["field"] for d in error["details"]}
    assert {"config.epochs", "config.lr", "max_runtime_s"} <= fields, error
    assert error["field"] in fields and not any(f.startswith("body") for f in fields)


def test_bad_upload_lines_are_items_on_file_with_line_numbers(api: ApiHarness) -> None:
    text = (json.dumps({"func": "int a;", "target": 1}) + "\n{not json\n"
            + json.dumps({"func": "int b;", "target": 7}) + "\n").encode()
    error = error_of(api.upload(text))
    assert error["field"] == "file"
    assert [(d["field"], d["line"]) for d in error["details"]] == [("file", 2), ("file", 3)]


def test_idempotency_conflict_names_the_header_and_the_job(api: ApiHarness) -> None:
    body = api.job_body()
    headers = api.auth() | {"Idempotency-Key": "edge-1"}
    first = api.client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 201, first.text
    other = api.client.post("/v1/jobs", json=body | {"name": "other"}, headers=headers)
    assert other.status_code == 409
    error = error_of(other)
    assert error["field"] == "Idempotency-Key"
    assert [d["field"] for d in error["details"]] == ["Idempotency-Key"]
    assert first.json()["id"] in error["details"][0]["message"]


def test_not_ready_lists_one_item_per_check(api: ApiHarness) -> None:
    (api.settings.broker_dir / "queue").rmdir()
    response = api.client.get("/readyz")
    assert response.status_code == 503
    error = error_of(response)
    items = {d["field"]: d["message"] for d in error["details"]}
    assert set(items) == {"database", "broker", "store"}
    assert items["broker"].startswith("failed") and items["database"].startswith("ok")


@pytest.mark.parametrize(("loc", "keep_last", "field"), [
    (("body", "datasets", "train", "DatasetIdRef", "dataset_id"), False,
     "datasets.train.dataset_id"),
    (("body", "v", "list[int]"), False, "v"),
    (("body", "v", "function-after[_check(), str]"), False, "v"),
    (("body", "v", "constrained-str"), False, "v"),
    (("body", "items", 0, "name"), False, "items.0.name"),
    (("body", "config", "Learning-Rate"), True, "config.Learning-Rate"),
    (("query", "limit"), False, "limit"),
    (("path", "job_id"), False, "job_id"),
    (("header", "idempotency-key"), False, "Idempotency-Key"),
    (("header", "last-event-id"), False, "Last-Event-ID"),
    (("body",), False, "body"),
])
def test_field_is_a_dotted_name(loc: tuple[Any, ...], keep_last: bool, field: str) -> None:
    assert field_path(loc, keep_last=keep_last) == field


def test_an_unknown_config_key_is_named_as_sent(api: ApiHarness) -> None:
    body = api.job_body()
    body["config"]["Learning-Rate"] = 0.1
    response = api.client.post("/v1/jobs", json=body, headers=api.auth())
    assert response.status_code == 422
    assert error_of(response)["field"] == "config.Learning-Rate"


def test_domain_errors_give_items() -> None:
    config = details_for(InvalidTrainConfig([{"field": "lr", "message": "too big"},
                                             {"field": "config", "message": "relation"}]))
    assert [(i.field, i.message) for i in config or []] == [("config.lr", "too big"),
                                                            ("config", "relation")]
    data = details_for(DataError("x.jsonl", [(0, "empty"), (4, "bad")]))
    assert [(i.field, i.line) for i in data or []] == [("file", None), ("file", 4)]
    duplicate = details_for(DuplicateIdempotencyKey("j" * 32, "k"))
    assert duplicate is not None and duplicate[0].field == "Idempotency-Key"
    assert "j" * 32 in duplicate[0].message
    body = error_body("x", "y", "f", [{"field": "f", "message": "m"}], request_id="r")
    assert ErrorResponse.model_validate(body).error.details is not None


# --- the catch-all -------------------------------------------------------------------------------

def test_unexpected_exception_is_500_json_logged_with_the_request_id(
        api: ApiHarness, caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> None:
        raise RuntimeError("secret server path /srv/streamguard/data")

    api.client.app.add_api_route("/v1/edge-test-boom", boom)  # type: ignore[attr-defined]
    with caplog.at_level(logging.ERROR, logger="api.errors"):
        response = api.client.get("/v1/edge-test-boom?api_key=sg_never_logged",
                                  headers={"X-Request-ID": "trace-me-42"})
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error" and error["field"] is None
    assert error["details"] is None and error["request_id"] == "trace-me-42"
    assert "/srv" not in response.text and "RuntimeError" not in response.text
    records = [r for r in caplog.records if "trace-me-42" in r.getMessage()]
    assert len(records) == 1 and records[0].exc_info is not None
    assert "sg_never_logged" not in caplog.text


class _RaiseOutside:
    """Raises outside every StreamGuard middleware, so only ServerErrorMiddleware's handler
    can answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/outer-boom":
            raise ValueError("outside")
        await self.app(scope, receive, send)


def test_an_error_outside_the_middleware_still_answers_json(tmp_path: Path,
                                                            api_db_url: str) -> None:
    app = create_app(Settings.model_validate({"data_dir": tmp_path, "db": {"url": api_db_url}}))
    app.add_middleware(_RaiseOutside)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/outer-boom")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal_error" and len(error["request_id"]) == 32


def test_405_names_every_allowed_method(api: ApiHarness) -> None:
    response = api.client.delete("/v1/jobs", headers=api.auth())
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert {"GET", "POST"} <= allowed


# --- CORS ----------------------------------------------------------------------------------------

PREFLIGHT = {"Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "authorization, content-type"}


def test_cors_is_off_by_default(api: ApiHarness) -> None:
    preflight = api.client.options("/v1/jobs", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in preflight.headers
    simple = api.client.get("/healthz", headers={"Origin": "https://ui.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_allows_the_configured_origins_only(tmp_path: Path, api_db_url: str) -> None:
    settings = Settings.model_validate({"data_dir": tmp_path, "db": {"url": api_db_url},
                                        "api": {"cors_origins": ["https://ui.example"]}})
    with TestClient(create_app(settings)) as client:
        preflight = client.options("/v1/jobs", headers=PREFLIGHT)
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://ui.example"
        assert "x-request-id" in preflight.headers
        simple = client.get("/healthz", headers={"Origin": "https://ui.example"})
        assert simple.headers["access-control-allow-origin"] == "https://ui.example"
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        refused = client.options("/v1/jobs", headers=PREFLIGHT | {"Origin": "https://evil.example"})
        assert refused.status_code == 400
        assert error_of(refused)["field"] == "Origin"
        unauthorized = client.get("/v1/jobs", headers={"Origin": "https://ui.example"})
        assert unauthorized.status_code == 401
        assert unauthorized.headers["access-control-allow-origin"] == "https://ui.example"


# --- access log ----------------------------------------------------------------------------------

def test_access_log_filter_drops_query_strings() -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/v1/jobs?api_key=sg_secret&limit=5",
                                "1.1", 401), None)
    assert RedactQueryFilter().filter(record)
    text = record.getMessage()
    assert "sg_secret" not in text and '"GET /v1/jobs?<redacted> HTTP/1.1" 401' in text
    plain = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                              '1.2.3.4 - "GET /x?token=abc HTTP/1.1" 200', None, None)
    RedactQueryFilter().filter(plain)
    assert "abc" not in plain.getMessage()


# --- a real server -------------------------------------------------------------------------------

UPLOAD_MB = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Proc]]:
    """uvicorn serving api.main:serve_app on 127.0.0.1 (SQLite; nothing here reaches it)."""
    tmp = tmp_path_factory.mktemp("edge-server")
    port = free_port()
    env = base_env() | {"SG_DATA_DIR": str(tmp / "data"),
                        "SG_API__MAX_UPLOAD_MB": str(UPLOAD_MB)}
    proc = Proc("api", api_cmd(port), env, tmp / "api.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            proc.check_alive()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, proc.tail()
            time.sleep(0.2)
        yield port, proc
    finally:
        proc.stop()


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak so far) of a process, in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if line.startswith(("VmRSS", "VmHWM")))
    return {name: int(value.split()[0]) for name, value in fields.items()}


def stream_post(port: int, path: str, *, content_type: str, total: int, chunked: bool,
                prefix: bytes = b"", fill: bytes = b"[",
                timeout_s: float = 30.0) -> tuple[int, bytes]:
    """POST `total` bytes (declared or chunked) over a raw socket, reading while sending.

    Returns (body bytes handed to the kernel, what the server answered); the server closing
    the connection ends the upload, as it would for any client.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
            + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {total}\r\n")
            + "\r\n").encode()
    piece = fill * (256 * 1024 // len(fill))

    def frame(data: bytes) -> bytes:
        return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

    sock.sendall(head + (frame(prefix) if prefix else b""))
    sock.setblocking(False)
    sent, pending, answer = len(prefix), b"", b""
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not pending and sent < total:
                pending = frame(piece)
                sent += len(piece)
            readable, writable, _ = select.select([sock], [sock] if pending else [], [], 1.0)
            if readable:
                data = sock.recv(65536)
                if not data:
                    break
                answer += data
            if writable:
                pending = pending[sock.send(pending):]
            if not pending and sent >= total:
                break
    except (ConnectionResetError, BrokenPipeError):
        pass  # the server closed the connection after answering
    finally:
        sock.close()
    return sent, answer


def status_and_error(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, dict(json.loads(body)["error"])


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
def test_200mb_json_body_is_refused_without_growing_memory(server: tuple[int, Proc],
                                                           chunked: bool) -> None:
    port, proc = server
    before = memory_kib(proc.pid)
    sent, answer = stream_post(port, "/v1/jobs", content_type="application/json",
                               total=200 * MIB, chunked=chunked)
    after = memory_kib(proc.pid)
    status, error = status_and_error(answer)
    assert status == 413 and error["field"] == "body", answer[:500]
    assert b"connection: close" in answer.lower()
    assert sent < 32 * MIB  # the server stopped it, not the client
    peak_growth_mib = (after["VmHWM"] - before["VmRSS"]) / 1024
    assert peak_growth_mib < 50, (before, after)


def test_chunked_upload_over_the_limit_stops_early(server: tuple[int, Proc]) -> None:
    port, proc = server
    before = memory_kib(proc.pid)
    prefix = (b'--sgtest\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"'
              b"\r\nContent-Type: application/x-ndjson\r\n\r\n")
    line = json.dumps({"func": "y" * 200, "target": 0}).encode() + b"\n"
    sent, answer = stream_post(port, "/v1/datasets", total=200 * MIB, chunked=True,
                               content_type="multipart/form-data; boundary=sgtest",
                               prefix=prefix, fill=line)
    status, error = status_and_error(answer)
    assert status == 413 and error["field"] == "file", answer[:500]
    assert sent < UPLOAD_MB * MIB + 24 * MIB  # the limit plus what socket buffers held
    assert (memory_kib(proc.pid)["VmHWM"] - before["VmRSS"]) / 1024 < 50


def test_a_key_in_the_query_string_never_reaches_the_log(server: tuple[int, Proc]) -> None:
    port, proc = server
    secret = "sg_edge_secret_query_key"
    for url in (f"/v1/jobs?api_key={secret}", f"/v1/datasets?limit=5&token={secret}",
                f"/nowhere?key={secret}"):
        response = httpx.get(f"http://127.0.0.1:{port}{url}", timeout=10)
        assert response.status_code in (401, 404)
    proc.wait_for_output("GET /nowhere?<redacted>", timeout_s=10)
    text = proc.text()
    assert "GET /v1/jobs?<redacted> HTTP/1.1" in text
    assert secret not in text
