"""Hostile inputs at the API's edge (issue 6): each answered 4xx in the error shape, nothing stored.

Every case of the tables below runs on PostgreSQL and on SQLite (the `world` fixture of
hostile_fixtures.py). A case is (id, request builder, expected status, expected field[, code]);
the status is one code or a set where the exact one is debatable (never 500), the field is a
dotted name, a set of accepted names, or ANY. Each case checks, and reports every miss at once:

* the status (4xx, the expected one), `Content-Type: application/json`;
* the body is exactly `{"error": {"code", "message", "field", "details", "request_id"}}`,
  `details` null or a list of `{field, message, line}`, the request id also in `X-Request-ID`;
* no server path (the harness's tmp folder, data_dir, the store root, `/tmp/`, `/work`) and no
  `127.0.0.1:` in the body, apart from the exact strings the client itself sent;
* nothing stored: the jobs, datasets, events and stored objects of both tenants are unchanged.

`test_accepted_forms` is the positive control (the same world accepts the well-formed forms), and
`test_200mb_json_body_is_refused_while_reading` sends 200 MB to a real uvicorn process.

Run: .venv/bin/pytest -m integration tests/integration/test_hostile.py
"""

from __future__ import annotations

import base64
import json
import os
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from tests.e2e.harness import VENV_BIN, Proc, base_env, free_port, wait_ready
from tests.integration import api_fixtures, hostile_fixtures
from tests.integration.api_fixtures import good_rows
from tests.integration.db_fixtures import sqlite_with_key
from tests.integration.hostile_fixtures import Req, World, jsonl, multipart, send

# Fixtures (integration/conftest.py is owned elsewhere).
api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions
world = hostile_fixtures.world

pytestmark = pytest.mark.integration

ANY = "<any field>"
SERVER_MARKERS = ("/tmp/", "/work", "127.0.0.1:")
ERROR_KEYS = {"code", "message", "field", "details", "request_id"}
ITEM_KEYS = {"field", "message", "line"}
MiB = 1024 * 1024


class Case(NamedTuple):
    id: str
    build: Callable[[World], Req]
    status: int | frozenset[int]
    field: str | frozenset[str] | None
    code: str | None = None


def statuses(*codes: int) -> frozenset[int]:
    return frozenset(codes)


def fields(*names: str) -> frozenset[str]:
    return frozenset(names)


# --- request builders ---------------------------------------------------------------------------

def raw_json(payload: Any) -> bytes:
    """JSON as a hostile client writes it: NaN/Infinity literals and lone surrogates allowed."""
    return json.dumps(payload, allow_nan=True).encode()


def post_job(body: Callable[[World], Any], *, echo: Callable[[World], tuple[str, ...]] =
             lambda w: (), headers: dict[str, str] | None = None) -> Callable[[World], Req]:
    def build(w: World) -> Req:
        payload = body(w)
        return Req("POST", "/v1/jobs", content=raw_json(payload),
                   headers={"Content-Type": "application/json"} | (headers or {}),
                   echo=echo(w))
    return build


def with_model(value: Callable[[World], Any]) -> Callable[[World], Req]:
    def echo(w: World) -> tuple[str, ...]:
        v = value(w)
        return (v,) if isinstance(v, str) and v else ()
    return post_job(lambda w: w.config_body(model=value(w)), echo=echo)


def get(url: Callable[[World], str], *, headers: dict[str, str] | None = None,
        echo: Callable[[World], tuple[str, ...]] = lambda w: ()) -> Callable[[World], Req]:
    return lambda w: Req("GET", url(w), headers=dict(headers or {}), echo=echo(w))


def upload(parts: Callable[[World], list[tuple[str, str | None, bytes, str | None]]]
           ) -> Callable[[World], Req]:
    def build(w: World) -> Req:
        body, ctype = multipart(parts(w))
        return Req("POST", "/v1/datasets", content=body, headers={"Content-Type": ctype})
    return build


def file_part(data: bytes, filename: str = "train.jsonl"
              ) -> list[tuple[str, str | None, bytes, str | None]]:
    return [("file", filename, data, "application/x-ndjson")]


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def nested(n: int, open_: str = "[", close: str = "]") -> str:
    return open_ * n + close * n


# --- the tables --------------------------------------------------------------------------------

MODEL = "config.model"

MODEL_CASES: list[Case] = [
    # absolute paths
    Case("model-abs-etc", with_model(lambda w: "/etc"), 422, MODEL),
    Case("model-abs-tmp", with_model(lambda w: "/tmp/x"), 422, MODEL),
    Case("model-abs-root", with_model(lambda w: "/"), 422, MODEL),
    Case("model-abs-double-slash", with_model(lambda w: "//etc/passwd"), 422, MODEL),
    Case("model-abs-proc", with_model(lambda w: "/proc/self/cwd"), 422, MODEL),
    # relative paths
    Case("model-rel-dot", with_model(lambda w: "./m"), 422, MODEL),
    Case("model-rel-dotdot-chain", with_model(lambda w: "m/../.."), 422, MODEL),
    Case("model-rel-three-parts", with_model(lambda w: "a/b/c"), 422, MODEL),
    Case("model-dotdot", with_model(lambda w: ".."), 422, MODEL),
    Case("model-dotdot-slash", with_model(lambda w: "../x"), 422, MODEL),
    Case("model-dot", with_model(lambda w: "."), 422, MODEL),
    Case("model-dot-tiny", with_model(lambda w: "./tiny"), 422, MODEL),
    Case("model-hub-dotdot-owner", with_model(lambda w: "../codebert-base"), 422, MODEL),
    Case("model-hub-dotdot-name", with_model(lambda w: "microsoft/.."), 422, MODEL),
    Case("model-hub-dotdot-middle", with_model(lambda w: "microsoft/../etc"), 422, MODEL),
    Case("model-hub-dot-name", with_model(lambda w: "microsoft/."), 422, MODEL),
    Case("model-trailing-slash", with_model(lambda w: "tiny/"), 422, MODEL),
    Case("model-leading-slash-scratch", with_model(lambda w: "/tiny"), 422, MODEL),
    Case("model-hub-empty-owner", with_model(lambda w: "/codebert-base"), 422, MODEL),
    Case("model-hub-empty-name", with_model(lambda w: "microsoft/"), 422, MODEL),
    Case("model-hub-double-slash", with_model(lambda w: "microsoft//codebert-base"), 422, MODEL),
    Case("model-hub-three-parts", with_model(lambda w: "microsoft/codebert-base/extra"), 422,
         MODEL),
    # home directories
    Case("model-tilde", with_model(lambda w: "~"), 422, MODEL),
    Case("model-tilde-user", with_model(lambda w: "~root"), 422, MODEL),
    Case("model-tilde-path", with_model(lambda w: "~/models"), 422, MODEL),
    # schemes
    Case("model-file-url", with_model(lambda w: "file:///etc"), 422, MODEL),
    Case("model-file-localhost", with_model(lambda w: "file://localhost/etc/passwd"), 422, MODEL),
    Case("model-http", with_model(lambda w: "http://x/y"), 422, MODEL),
    Case("model-https-hub", with_model(lambda w: "https://huggingface.co/microsoft/codebert-base"),
         422, MODEL),
    Case("model-s3", with_model(lambda w: "s3://b/k"), 422, MODEL),
    Case("model-hf-scheme", with_model(lambda w: "hf://microsoft/codebert-base"), 422, MODEL),
    Case("model-drive-forward", with_model(lambda w: "C:/Windows"), 422, MODEL),
    # backslashes
    Case("model-backslash-rel", with_model(lambda w: "a\\b"), 422, MODEL),
    Case("model-backslash-hub", with_model(lambda w: "microsoft\\codebert-base"), 422, MODEL),
    Case("model-backslash-drive", with_model(lambda w: "C:\\Windows\\System32"), 422, MODEL),
    Case("model-backslash-unc", with_model(lambda w: "\\\\server\\share"), 422, MODEL),
    Case("model-backslash-dotdot", with_model(lambda w: "..\\..\\etc"), 422, MODEL),
    # NUL, control characters, empty, whitespace, odd characters
    Case("model-nul", with_model(lambda w: "\x00"), 422, MODEL),
    Case("model-nul-suffix", with_model(lambda w: "tiny\x00"), 422, MODEL),
    Case("model-nul-hub", with_model(lambda w: "microsoft/codebert-base\x00/../../etc"), 422,
         MODEL),
    Case("model-escape-char", with_model(lambda w: "tiny\x1b[2J"), 422, MODEL),
    Case("model-empty", with_model(lambda w: ""), 422, MODEL),
    Case("model-space", with_model(lambda w: " "), 422, MODEL),
    Case("model-tab", with_model(lambda w: "\t"), 422, MODEL),
    Case("model-newline-suffix", with_model(lambda w: "tiny\n"), 422, MODEL),
    Case("model-leading-space", with_model(lambda w: " tiny"), 422, MODEL),
    Case("model-space-in-hub", with_model(lambda w: "micro soft/codebert-base"), 422, MODEL),
    Case("model-percent-encoded", with_model(lambda w: "%2e%2e/etc"), 422, MODEL),
    Case("model-unicode-slash", with_model(lambda w: "microsoft\u2215codebert-base"), 422, MODEL),
    Case("model-lone-surrogate", with_model(lambda w: "tiny\ud800"), 422, MODEL),
    Case("model-10k-chars", with_model(lambda w: "a" * 10_000), 422, MODEL),
    Case("model-10k-hub", with_model(lambda w: "owner/" + "n" * 10_000), 422, MODEL),
    # not a string
    Case("model-int", with_model(lambda w: 123), 422, MODEL),
    Case("model-null", with_model(lambda w: None), 422, MODEL),
    Case("model-list", with_model(lambda w: ["/etc"]), 422, MODEL),
    Case("model-object", with_model(lambda w: {"path": "/etc"}), 422, MODEL),
    Case("model-bool", with_model(lambda w: True), 422, MODEL),
    # checkpoint folders in the store (the exploit), own and another tenant's
    Case("model-other-tenant-artifact-abs", with_model(lambda w: str(w.ckpt_dirs["b"])), 422,
         MODEL),
    Case("model-other-tenant-artifact-data-dir", with_model(
        lambda w: f"{w.settings.data_dir}/artifacts/tenants/{w.tenant('b')}/jobs/"
                  f"{w.jobs['b_completed']}/checkpoints/epoch-0001"), 422, MODEL),
    Case("model-other-tenant-artifact-rel", with_model(
        lambda w: f"tenants/{w.tenant('b')}/jobs/{w.jobs['b_completed']}/checkpoints/epoch-0001"),
         422, MODEL),
    Case("model-other-tenant-artifact-file-url", with_model(lambda w: w.ckpt_dirs["b"].as_uri()),
         422, MODEL),
    Case("model-other-tenant-artifact-traversal", with_model(
        lambda w: f"{w.ckpt_dirs['a']}/../../../../{w.tenant('b')}/jobs/"
                  f"{w.jobs['b_completed']}/checkpoints/epoch-0001"), 422, MODEL),
    Case("model-own-artifact-abs", with_model(lambda w: str(w.ckpt_dirs["a"])), 422, MODEL),
    Case("model-own-artifact-last", with_model(
        lambda w: str(w.ckpt_dirs["a"].parent / "epoch-0002")), 422, MODEL),
    # job: references
    Case("model-job-other-tenant", with_model(lambda w: f"job:{w.jobs['b_completed']}"), 422,
         MODEL),
    Case("model-job-other-tenant-best", with_model(
        lambda w: f"job:{w.jobs['b_completed']}/best"), 422, MODEL),
    Case("model-job-other-tenant-last", with_model(
        lambda w: f"job:{w.jobs['b_completed']}/last"), 422, MODEL),
    Case("model-job-nonexistent", with_model(lambda w: f"job:{uuid.uuid4().hex}"), 422, MODEL),
    Case("model-job-own-queued", with_model(lambda w: f"job:{w.jobs['a_queued']}"), 422, MODEL),
    Case("model-job-own-queued-best", with_model(lambda w: f"job:{w.jobs['a_queued']}/best"),
         422, MODEL),
    Case("model-job-middle", with_model(lambda w: f"job:{w.jobs['a_completed']}/middle"), 422,
         MODEL),
    Case("model-job-epoch-folder", with_model(
        lambda w: f"job:{w.jobs['a_completed']}/epoch-0001"), 422, MODEL),
    Case("model-job-extra-part", with_model(lambda w: f"job:{w.jobs['a_completed']}/best/x"),
         422, MODEL),
    Case("model-job-traversal", with_model(
        lambda w: f"job:{w.jobs['a_completed']}/../{w.jobs['b_completed']}"), 422, MODEL),
    Case("model-job-empty", with_model(lambda w: "job:"), 422, MODEL),
    Case("model-job-only-name", with_model(lambda w: "job:/best"), 422, MODEL),
    Case("model-job-space", with_model(lambda w: f"job: {w.jobs['a_completed']}"), 422, MODEL),
    Case("model-job-nul", with_model(lambda w: f"job:{w.jobs['a_completed']}\x00"), 422, MODEL),
    Case("model-job-dataset-id", with_model(lambda w: f"job:{w.datasets['train']}"), 422, MODEL),
    Case("model-job-path", with_model(lambda w: "job:/etc/passwd"), 422, MODEL),
]


def metrics_url(query: str) -> Callable[[World], str]:
    return lambda w: f"/v1/jobs/{w.jobs['a_completed']}/metrics?{query}"


INT_QUERY_CASES: list[Case] = [
    Case("metrics-offset-2p63", get(metrics_url("offset=9223372036854775808")), 422, "offset"),
    Case("metrics-offset-1e20", get(metrics_url("offset=1e20")), 422, "offset"),
    Case("metrics-offset-10p30", get(metrics_url(f"offset={10**30}")), 422, "offset"),
    Case("metrics-offset-negative", get(metrics_url("offset=-1")), 422, "offset"),
    Case("metrics-offset-float", get(metrics_url("offset=1.5")), 422, "offset"),
    Case("metrics-offset-text", get(metrics_url("offset=abc")), 422, "offset"),
    Case("metrics-offset-nul", get(metrics_url("offset=1%00")), 422, "offset"),
    Case("metrics-limit-zero", get(metrics_url("limit=0")), 422, "limit"),
    Case("metrics-limit-negative", get(metrics_url("limit=-5")), 422, "limit"),
    Case("metrics-limit-10p30", get(metrics_url(f"limit={10**30}")), 422, "limit"),
    Case("metrics-limit-2p63", get(metrics_url("limit=9223372036854775808")), 422, "limit"),
    Case("metrics-limit-true", get(metrics_url("limit=true")), 422, "limit"),
    Case("metrics-limit-1e20", get(metrics_url("limit=1e20")), 422, "limit"),
    Case("jobs-limit-2p63", get(lambda w: "/v1/jobs?limit=9223372036854775808"), 422, "limit"),
    Case("jobs-limit-zero", get(lambda w: "/v1/jobs?limit=0"), 422, "limit"),
    Case("jobs-limit-true", get(lambda w: "/v1/jobs?limit=true"), 422, "limit"),
    Case("jobs-limit-1e20", get(lambda w: "/v1/jobs?limit=1e20"), 422, "limit"),
    Case("datasets-limit-2p63", get(lambda w: "/v1/datasets?limit=9223372036854775808"), 422,
         "limit"),
    Case("datasets-limit-negative", get(lambda w: "/v1/datasets?limit=-1"), 422, "limit"),
    Case("datasets-limit-true", get(lambda w: "/v1/datasets?limit=true"), 422, "limit"),
    Case("datasets-limit-1e20", get(lambda w: "/v1/datasets?limit=1e20"), 422, "limit"),
]

#: (id, cursor as sent in the query string, already URL-safe)
CURSORS: list[tuple[str, str]] = [
    ("max-stamp", b64('["9999-12-31T23:59:59+00:00", "x"]')),
    ("max-stamp-west", b64('["9999-12-31T23:59:59-23:59", "x"]')),
    ("min-stamp-east", b64('["0001-01-01T00:00:00+23:59", "x"]')),
    ("year-10000", b64('["10000-01-01T00:00:00+00:00", "x"]')),
    ("year-10000-signed", b64('["+10000-01-01T00:00:00+00:00", "x"]')),
    ("huge-float", b64('[1e400, "x"]')),
    ("huge-ints", b64(f"[{10**40}, {10**40}]")),
    ("ints", b64("[1, 2]")),
    ("three-items", b64('["2024-01-01T00:00:00+00:00", "x", 3]')),
    ("object", b64('{"created_at": "2024-01-01T00:00:00+00:00", "id": "x"}')),
    ("naive-stamp", b64('["2024-01-01T00:00:00", "x"]')),
    ("nul-in-id", b64('["2024-01-01T00:00:00+00:00", "a\\u0000b"]')),
    ("surrogate-in-id", b64('["2024-01-01T00:00:00+00:00", "\\ud800"]')),
    ("10k-id", b64(json.dumps(["2024-01-01T00:00:00+00:00", "x" * 10_000]))),
    ("nested-json", b64(nested(5_000))),  # deeper than json's recursion, short enough a URL
    ("not-base64", "!!!!****"),
    ("nul", "%00"),
    ("non-ascii", "%C3%A9%C3%A9"),
    ("10k-chars", "A" * 10_000),
]

CURSOR_CASES: list[Case] = [
    Case(f"cursor-{where}-{cid}", get(lambda w, where=where, cursor=cursor:
                                      f"/v1/{where}?cursor={cursor}"),
         422, "cursor", "invalid_cursor")
    for where in ("jobs", "datasets") for cid, cursor in CURSORS
]

LAST_EVENT_IDS: list[tuple[str, str]] = [
    ("2p63", "9223372036854775808"),
    ("1e20", "1e20"),
    ("negative", "-1"),
    ("text", "abc"),
    ("float", "1.5"),
    ("hex", "0x10"),
    ("30-digits", "9" * 30),
    ("digits-then-text", "12abc"),
]


def events_url(w: World) -> str:
    return f"/v1/jobs/{w.jobs['a_completed']}/events"


LAST_EVENT_ID_CASES: list[Case] = [
    *[Case(f"last-event-id-header-{lid}",
           get(events_url, headers={"Last-Event-ID": value}), 422,
           fields("Last-Event-ID", "last-event-id"))
      for lid, value in LAST_EVENT_IDS],
    *[Case(f"last-event-id-query-{lid}",
           get(lambda w, value=value: f"{events_url(w)}?last_event_id={value}"), 422,
           "last_event_id")
      for lid, value in LAST_EVENT_IDS],
]

NOT_FOUND_OR_INVALID = statuses(404, 422)

CONTROL_CHAR_CASES: list[Case] = [
    # path ids
    Case("path-job-nul", get(lambda w: "/v1/jobs/abc%00"), NOT_FOUND_OR_INVALID, ANY),
    Case("path-own-job-nul", get(lambda w: f"/v1/jobs/{w.jobs['a_completed']}%00"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-job-nul-cancel", lambda w: Req("POST", "/v1/jobs/abc%00/cancel"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-job-nul-metrics", get(lambda w: "/v1/jobs/abc%00/metrics"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-job-nul-events", get(lambda w: "/v1/jobs/abc%00/events"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-job-nul-checkpoints", get(lambda w: "/v1/jobs/abc%00/checkpoints"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-checkpoint-name-nul", get(
        lambda w: f"/v1/jobs/{w.jobs['a_completed']}/checkpoints/best%00/download"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-checkpoint-name-crlf", get(
        lambda w: f"/v1/jobs/{w.jobs['a_completed']}/checkpoints/best%0d%0a/download"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-checkpoint-name-traversal", get(
        lambda w: f"/v1/jobs/{w.jobs['a_completed']}/checkpoints/..%2f..%2fbest/download"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-dataset-nul", get(lambda w: "/v1/datasets/x%00y"), NOT_FOUND_OR_INVALID, ANY),
    Case("path-own-dataset-nul", get(lambda w: f"/v1/datasets/{w.datasets['train']}%00"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-job-ctrl-01", get(lambda w: "/v1/jobs/abc%01"), NOT_FOUND_OR_INVALID, ANY),
    Case("path-job-escape", get(lambda w: "/v1/jobs/abc%1b%5b2J"), NOT_FOUND_OR_INVALID, ANY),
    Case("path-dataset-del", get(lambda w: "/v1/datasets/x%7f"), NOT_FOUND_OR_INVALID, ANY),
    Case("path-job-bad-utf8", get(lambda w: "/v1/jobs/%FF%FE"), NOT_FOUND_OR_INVALID, ANY),
    Case("path-dataset-surrogate", get(lambda w: "/v1/datasets/%ED%A0%80"),
         NOT_FOUND_OR_INVALID, ANY),
    Case("path-job-5k-chars", get(lambda w: "/v1/jobs/" + "a" * 5000), NOT_FOUND_OR_INVALID, ANY),
    # job name, dataset_id, Idempotency-Key
    Case("job-name-nul", post_job(lambda w: w.body(name="a\x00b")), 422, "name"),
    Case("job-name-escape", post_job(lambda w: w.body(name="\x1b[31mred")), 422, "name"),
    Case("job-name-bell", post_job(lambda w: w.body(name="a\x07b")), 422, "name"),
    Case("job-name-newline", post_job(lambda w: w.body(name="line\nbreak")), 422, "name"),
    Case("job-name-del", post_job(lambda w: w.body(name="a\x7fb")), 422, "name"),
    Case("job-name-lone-surrogate", post_job(lambda w: w.body(name="a\ud800b")), 422, "name"),
    Case("job-dataset-id-nul", post_job(lambda w: w.body(datasets={
        "train": {"dataset_id": "a\x00b"}, "val": {"dataset_id": w.datasets["val"]}})),
         NOT_FOUND_OR_INVALID, "datasets.train.dataset_id"),
    Case("job-dataset-id-own-nul", post_job(lambda w: w.body(datasets={
        "train": {"dataset_id": w.datasets["train"][:30] + "\x00"},
        "val": {"dataset_id": w.datasets["val"]}})),
         NOT_FOUND_OR_INVALID, "datasets.train.dataset_id"),
    Case("job-dataset-id-surrogate", post_job(lambda w: w.body(datasets={
        "train": {"dataset_id": "\ud800"}, "val": {"dataset_id": w.datasets["val"]}})),
         NOT_FOUND_OR_INVALID, "datasets.train.dataset_id"),
    Case("job-dataset-id-escape", post_job(lambda w: w.body(datasets={
        "train": {"dataset_id": w.datasets["train"]},
        "val": {"dataset_id": "\x1b" + w.datasets["val"][1:]}})),
         NOT_FOUND_OR_INVALID, "datasets.val.dataset_id"),
    Case("job-idempotency-key-nul", post_job(lambda w: w.body(),
                                             headers={"Idempotency-Key": "k\x00"}),
         statuses(400, 422), ANY),
    Case("job-idempotency-key-ctrl", post_job(lambda w: w.body(),
                                              headers={"Idempotency-Key": "k\x01\x1b"}),
         statuses(400, 422), ANY),
    # dataset name form field and file name
    Case("dataset-name-nul", upload(lambda w: [("name", None, b"a\x00b", None),
                                               *file_part(jsonl(good_rows()))]), 422, "name"),
    Case("dataset-name-escape", upload(lambda w: [("name", None, b"\x1b[2Jx", None),
                                                  *file_part(jsonl(good_rows()))]), 422, "name"),
    Case("dataset-name-newline", upload(lambda w: [("name", None, b"a\nb", None),
                                                   *file_part(jsonl(good_rows()))]), 422, "name"),
    Case("dataset-filename-nul", upload(lambda w: file_part(jsonl(good_rows()), "a\x00.jsonl")),
         422, ANY),
    Case("dataset-filename-escape", upload(
        lambda w: file_part(jsonl(good_rows()), "\x1b[2J.jsonl")), 422, ANY),
]

BIG_STRING = "x" * (2 * MiB)


def chunked(data: bytes, size: int = 64 * 1024) -> Callable[[World], Iterator[bytes]]:
    """A generator body: no Content-Length is sent (chunked transfer)."""
    def gen(_w: World) -> Iterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start:start + size]
    return gen


def post_raw_job(data: bytes | Callable[[World], Any], ctype: str = "application/json"
                 ) -> Callable[[World], Req]:
    def build(w: World) -> Req:
        content = data(w) if callable(data) else data
        return Req("POST", "/v1/jobs", content=content, headers={"Content-Type": ctype})
    return build


def deep_body(w: World) -> bytes:
    body = raw_json(w.body())
    return body[:-1] + b', "extra": ' + nested(100_000).encode() + b"}"


BODY_CASES: list[Case] = [
    Case("body-malformed-json", post_raw_job(b'{"name": '), 422, "body"),
    Case("body-trailing-comma", post_raw_job(b'{"name": "x",}'), 422, "body"),
    Case("body-single-quotes", post_raw_job(b"{'name': 'x'}"), 422, "body"),
    Case("body-empty", post_raw_job(b""), 422, "body"),
    Case("body-array", post_raw_job(b"[]"), 422, "body"),
    Case("body-string", post_raw_job(b'"x"'), 422, "body"),
    Case("body-null", post_raw_job(b"null"), 422, "body"),
    Case("body-number", post_raw_job(b"42"), 422, "body"),
    Case("body-bad-utf8", post_raw_job(b'{"name": "\xff\xfe"}'), statuses(400, 422), "body"),
    Case("body-nested-100k-arrays", post_raw_job(nested(100_000).encode()), 422, "body"),
    Case("body-nested-100k-in-field", post_raw_job(deep_body), 422, "body"),
    Case("body-nested-100k-objects", post_raw_job(
        ('{"a":' * 100_000 + "1" + "}" * 100_000).encode()), 422, "body"),
    Case("body-epochs-true", post_job(lambda w: w.config_body(epochs=True)), 422,
         "config.epochs"),
    Case("body-batch-size-true", post_job(lambda w: w.config_body(batch_size=True)), 422,
         "config.batch_size"),
    Case("body-max-seq-len-false", post_job(lambda w: w.config_body(max_seq_len=False)), 422,
         "config.max_seq_len"),
    Case("body-seed-true", post_job(lambda w: w.config_body(seed=True)), 422, "config.seed"),
    Case("body-patience-true", post_job(lambda w: w.config_body(early_stopping_patience=True)),
         422, "config.early_stopping_patience"),
    Case("body-lr-true", post_job(lambda w: w.config_body(lr=True)), 422, "config.lr"),
    Case("body-max-runtime-true", post_job(lambda w: w.body(max_runtime_s=True)), 422,
         "max_runtime_s"),
    Case("body-lr-nan-string", post_job(lambda w: w.config_body(lr="NaN")), 422, "config.lr"),
    Case("body-lr-nan-literal", post_job(lambda w: w.config_body(lr=float("nan"))), 422,
         "config.lr"),
    Case("body-lr-1e999", post_raw_job(
        lambda w: raw_json(w.config_body(lr=12345.0)).replace(b"12345.0", b"1e999")),
         422, "config.lr"),
    Case("body-lr-infinity-string", post_job(lambda w: w.config_body(lr="Infinity")), 422,
         "config.lr"),
    Case("body-grad-clip-minus-infinity", post_job(
        lambda w: w.config_body(grad_clip=float("-inf"))), 422, "config.grad_clip"),
    Case("body-warmup-nan", post_job(lambda w: w.config_body(warmup_ratio=float("nan"))), 422,
         "config.warmup_ratio"),
    Case("body-unknown-top-level", post_job(lambda w: w.body(priority=1)), 422, "priority"),
    Case("body-tenant-id-field", post_job(lambda w: w.body(tenant_id=w.tenant("b"))), 422,
         "tenant_id"),
    Case("body-status-field", post_job(lambda w: w.body(status="completed")), 422, "status"),
    Case("body-unknown-config-field", post_job(lambda w: w.config_body(output_dir="/tmp/x")),
         422, "config.output_dir"),
    Case("body-2mb", post_job(lambda w: w.body(name=BIG_STRING)), 413, "body"),
    Case("body-2mb-chunked", post_raw_job(
        lambda w: chunked(raw_json(w.body(name=BIG_STRING)))(w)), 413, "body"),
    Case("body-just-over-1mib", post_job(lambda w: w.body(name="y" * (MiB + 16))), 413, "body"),
    Case("body-text-plain", post_raw_job(lambda w: raw_json(w.body()), "text/plain"),
         statuses(415, 422), ANY),
]

LINE_OK = json.dumps({"func": "int ok(void) { return 0; }", "target": 1}).encode() + b"\n"


def over_limit_upload(w: World) -> bytes:
    line = json.dumps({"func": "z" * 1000, "target": 0}).encode() + b"\n"
    body, _ = multipart(file_part(line * (3 * MiB // len(line))), boundary="hostilechunked")
    return body


DATASET_CASES: list[Case] = [
    Case("upload-nested-line", upload(lambda w: file_part(
        LINE_OK + b'{"func": ' + nested(100_000).encode() + b', "target": 0}\n')), 422, "file"),
    Case("upload-nested-bare-line", upload(lambda w: file_part(
        LINE_OK + nested(100_000).encode() + b"\n")), 422, "file"),
    Case("upload-empty", upload(lambda w: file_part(b"")), 422, "file"),
    Case("upload-blank-lines", upload(lambda w: file_part(b"\n\n  \n")), 422, "file"),
    Case("upload-not-utf8", upload(lambda w: file_part(
        LINE_OK + b'{"func": "\xff\xfe int", "target": 0}\n')), 422, "file"),
    Case("upload-nan-target", upload(lambda w: file_part(
        LINE_OK + b'{"func": "int f;", "target": NaN}\n')), 422, "file"),
    Case("upload-chunked-over-limit", lambda w: Req(
        "POST", "/v1/datasets", content=chunked(over_limit_upload(w))(w),
        headers={"Content-Type": "multipart/form-data; boundary=hostilechunked"}), 413, "file"),
    Case("upload-over-limit", upload(lambda w: file_part(
        (json.dumps({"func": "q" * 1000, "target": 1}) + "\n").encode() * 3000)), 413, "file"),
    Case("upload-no-file-part", upload(lambda w: [("name", None, b"x.jsonl", None)]), 422,
         "file"),
    Case("upload-json-body", lambda w: Req("POST", "/v1/datasets", content=b'{"file": "x"}',
                                           headers={"Content-Type": "application/json"}),
         statuses(415, 422), "file"),
    Case("upload-truncated-multipart", lambda w: Req(
        "POST", "/v1/datasets",
        content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n{"fu',
        headers={"Content-Type": "multipart/form-data; boundary=b"}), statuses(400, 422), ANY),
    Case("upload-no-boundary", lambda w: Req(
        "POST", "/v1/datasets", content=b"whatever",
        headers={"Content-Type": "multipart/form-data"}), statuses(400, 422), ANY),
    Case("upload-5000-fields", upload(lambda w: [(f"f{i}", None, b"x", None)
                                                 for i in range(5000)]
                                      + file_part(jsonl(good_rows()))),
         statuses(400, 413, 422), ANY),
]


def submit_with(train: str, val: str, test: str | None = None) -> Callable[[World], Req]:
    def body(w: World) -> dict[str, Any]:
        refs: dict[str, Any] = {"train": {"dataset_id": w.datasets[train]},
                                "val": {"dataset_id": w.datasets[val]}}
        if test is not None:
            refs["test"] = {"dataset_id": w.datasets[test]}
        return w.body(datasets=refs)
    return post_job(body)


def split_field(split: str) -> frozenset[str]:
    return fields(f"datasets.{split}", f"datasets.{split}.dataset_id")


SUBMIT_CASES: list[Case] = [
    Case("submit-one-class-train", submit_with("one_class_train", "val"), 422,
         split_field("train")),
    Case("submit-one-class-val", submit_with("train", "one_class_val"), 422, split_field("val")),
    Case("submit-empty-train", submit_with("empty", "val"), 422, split_field("train")),
    Case("submit-empty-val", submit_with("train", "empty"), 422, split_field("val")),
    Case("submit-empty-test", submit_with("train", "val", "empty"), 422, split_field("test")),
    Case("submit-same-train-and-val", submit_with("train", "train"), 422, split_field("val")),
    Case("submit-same-val-and-test", submit_with("train", "val", "val"), 422,
         split_field("test")),
    Case("submit-same-train-and-test", submit_with("train", "val", "train"), 422,
         split_field("test")),
]

ALL_CASES: list[Case] = [*MODEL_CASES, *INT_QUERY_CASES, *CURSOR_CASES, *LAST_EVENT_ID_CASES,
                         *CONTROL_CHAR_CASES, *BODY_CASES, *DATASET_CASES, *SUBMIT_CASES]
assert len({c.id for c in ALL_CASES}) == len(ALL_CASES), "duplicate case ids"


# --- checks --------------------------------------------------------------------------------------

def _echo_variants(echo: tuple[str, ...]) -> list[str]:
    out: set[str] = set()
    for text in echo:
        out |= {text, json.dumps(text)[1:-1], repr(text)[1:-1],
                json.dumps(repr(text))[1:-1], json.dumps(repr(text)[1:-1])[1:-1]}
    return sorted((v for v in out if v), key=len, reverse=True)


def leaks(w: World, response: httpx.Response, echo: tuple[str, ...]) -> list[str]:
    text = response.text
    for sent in _echo_variants(echo):
        text = text.replace(sent, "")
    markers = [*w.server_paths(), *SERVER_MARKERS]
    return [m for m in markers if m in text]


def matches(expected: Any, actual: Any) -> bool:
    if expected == ANY:
        return True
    if isinstance(expected, frozenset):
        return actual in expected
    return bool(actual == expected)


def shown(expected: Any) -> str:
    return repr(sorted(expected)) if isinstance(expected, frozenset) else repr(expected)


def error_problems(w: World, response: httpx.Response, case: Case,
                   echo: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    status = response.status_code
    if not 400 <= status < 500:
        problems.append(f"status {status}, not a 4xx")
    elif not matches(case.status, status):
        problems.append(f"status {status}, expected {shown(case.status)}")
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith("application/json"):
        problems.append(f"Content-Type {ctype!r}, not application/json")
    try:
        body = response.json()
    except ValueError:
        problems.append(f"body is not JSON: {response.text[:200]!r}")
        return problems
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(body, dict) or set(body) != {"error"} or not isinstance(error, dict):
        problems.append(f"body is not {{'error': {{...}}}}: {str(body)[:300]}")
        return problems
    if set(error) != ERROR_KEYS:
        problems.append(f"error keys {sorted(error)}, expected {sorted(ERROR_KEYS)}")
    if not isinstance(error.get("code"), str) or not error.get("code"):
        problems.append(f"error.code {error.get('code')!r} is not a non-empty string")
    if not isinstance(error.get("message"), str) or not error.get("message"):
        problems.append(f"error.message {error.get('message')!r} is not a non-empty string")
    if error.get("field") is not None and not isinstance(error.get("field"), str):
        problems.append(f"error.field {error.get('field')!r} is not a string or null")
    details = error.get("details")
    if details is not None:
        if not isinstance(details, list):
            problems.append(f"error.details is a {type(details).__name__}, not null or a list")
        else:
            for item in details:
                if not isinstance(item, dict) or set(item) != ITEM_KEYS \
                        or not isinstance(item.get("message"), str) \
                        or not (item.get("field") is None or isinstance(item["field"], str)) \
                        or not (item.get("line") is None or (isinstance(item["line"], int)
                                                             and item["line"] >= 1)):
                    problems.append(f"error.details item is not {{field, message, line}}: "
                                    f"{str(item)[:200]}")
                    break
    request_id = error.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        problems.append(f"error.request_id {request_id!r} is not a non-empty string")
    elif response.headers.get("x-request-id") != request_id:
        problems.append(f"X-Request-ID header {response.headers.get('x-request-id')!r} != "
                        f"error.request_id {request_id!r}")
    if not matches(case.field, error.get("field")):
        problems.append(f"error.field {error.get('field')!r}, expected {shown(case.field)}")
    if case.code is not None and error.get("code") != case.code:
        problems.append(f"error.code {error.get('code')!r}, expected {case.code!r}")
    found = leaks(w, response, echo)
    if found:
        problems.append(f"the body shows server paths/hosts {found}: {response.text[:300]!r}")
    return problems


def run_case(w: World, case: Case) -> tuple[httpx.Response | None, list[str]]:
    before = {label: w.counts(label) for label in ("a", "b")}
    req = case.build(w)
    problems: list[str] = []
    response: httpx.Response | None = None
    try:
        response = send(w, req)
    except Exception as exc:  # noqa: BLE001 - an unhandled server error is the finding
        problems.append(f"the server raised {type(exc).__name__}: {str(exc)[:300]} "
                        "(a 500 outside the error shape, or a broken stream)")
    if response is not None:
        problems += error_problems(w, response, case, req.echo)
    after = {label: w.counts(label) for label in ("a", "b")}
    if after != before:
        changed = {label: {k: (before[label][k], after[label][k]) for k in after[label]
                           if after[label][k] != before[label][k]} for label in after}
        problems.append(f"something was stored (before, after): "
                        f"{ {k: v for k, v in changed.items() if v} }")
    strays = w.cancel_strays()
    if strays:
        problems.append(f"job(s) {strays} were created and queued (cancelled by the test)")
    return response, problems


def _case_line(case: Case, response: httpx.Response | None) -> str:
    if response is None:
        return case.id
    return f"{case.id}: {response.status_code} {response.text[:400]!r}"


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_hostile_input_is_a_clean_4xx_and_stores_nothing(world: World, case: Case) -> None:
    response, problems = run_case(world, case)
    assert not problems, (f"[{world.backend}] {_case_line(case, response)}\n - "
                          + "\n - ".join(problems))


def test_upload_errors_name_the_line(world: World) -> None:
    """The nested-line and non-UTF-8 uploads point at line 2 (line 1 is fine)."""
    for data in (LINE_OK + b'{"func": ' + nested(100_000).encode() + b', "target": 0}\n',
                 LINE_OK + b'{"func": "\xff\xfe int", "target": 0}\n'):
        body, ctype = multipart(file_part(data))
        try:
            response = send(world, Req("POST", "/v1/datasets", content=body,
                                       headers={"Content-Type": ctype}))
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"the server raised {type(exc).__name__}: {str(exc)[:300]}")
        assert response.status_code == 422, response.text
        details = response.json()["error"]["details"]
        assert isinstance(details, list), details
        assert [d.get("line") for d in details] == [2], details
        assert all(d.get("field") == "file" for d in details), details


# --- positive controls: the same world accepts the well-formed forms ----------------------------

class Accepted(NamedTuple):
    id: str
    build: Callable[[World], Req]
    status: int


def stream_url(w: World, **params: str) -> Req:
    return Req("GET", events_url(w), params=params or None)


ACCEPTED: list[Accepted] = [
    Accepted("model-tiny", with_model(lambda w: "tiny"), 201),
    Accepted("model-random-roberta-base", with_model(lambda w: "random-roberta-base"), 201),
    Accepted("model-hub-codebert", with_model(lambda w: "microsoft/codebert-base"), 201),
    Accepted("model-job-own-completed", with_model(lambda w: f"job:{w.jobs['a_completed']}"),
             201),
    Accepted("model-job-own-completed-best", with_model(
        lambda w: f"job:{w.jobs['a_completed']}/best"), 201),
    Accepted("model-job-own-completed-last", with_model(
        lambda w: f"job:{w.jobs['a_completed']}/last"), 201),
    Accepted("job-with-test-split", submit_with("train", "val", "test"), 201),
    Accepted("metrics-offset-limit", get(metrics_url("offset=0&limit=200")), 200),
    Accepted("metrics-large-offset", get(metrics_url("offset=1000000")), 200),
    Accepted("last-event-id-zero", get(events_url, headers={"Last-Event-ID": "0"}), 200),
    Accepted("last-event-id-max", get(events_url, headers={"Last-Event-ID": str(2**63 - 1)}),
             200),
    Accepted("last-event-id-query", lambda w: stream_url(
        w, last_event_id=str(w.events["a_completed"][0])), 200),
    Accepted("upload-two-class", upload(lambda w: file_part(jsonl(good_rows()))), 201),
]


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.id for c in ACCEPTED])
def test_accepted_forms(world: World, case: Accepted) -> None:
    req = case.build(world)
    response = send(world, req)
    world.cancel_strays()
    assert response.status_code == case.status, response.text
    if case.status == 201 and req.url == "/v1/jobs":
        assert response.json()["status"] == "queued"


def test_a_cursor_handed_out_is_accepted(world: World) -> None:
    for where in ("jobs", "datasets"):
        first = send(world, Req("GET", f"/v1/{where}?limit=1"))
        assert first.status_code == 200, first.text
        cursor = first.json()["next_cursor"]
        assert cursor, first.json()
        second = send(world, Req("GET", f"/v1/{where}", params={"limit": 1, "cursor": cursor}))
        assert second.status_code == 200, second.text


def test_the_table_is_well_over_100_cases() -> None:
    assert len(ALL_CASES) > 150, len(ALL_CASES)


# --- a real server and a 200 MB body --------------------------------------------------------------

BIG_BODY_BYTES = 200 * 1024 * 1024
RSS_BUDGET_BYTES = 50 * 1024 * 1024


def rss_bytes(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    assert match, text
    return int(match.group(1)) * 1024


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, AssertionError):
                return
            time.sleep(0.01)


def json_pieces(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """`{"name": "xxx...", ...}` of `total` bytes, one chunk at a time (never held whole)."""
    head, tail = b'{"name": "', b'", "datasets": {}, "config": {}}'
    yield head
    left = total - len(head) - len(tail)
    block = b"x" * chunk
    while left > 0:
        piece = block if left >= chunk else block[:left]
        left -= len(piece)
        yield piece
    yield tail


def stream_post(port: int, path: str, key: str, *, chunked_body: bool,
                total: int) -> tuple[int | None, bytes, int]:
    """POST `total` bytes over a raw socket; stop sending as soon as the server answers or
    closes. Returns (status or None, response bytes, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    length = "Transfer-Encoding: chunked" if chunked_body else f"Content-Length: {total}"
    sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                  f"{length}\r\n\r\n").encode())
    sock.setblocking(False)
    pieces = json_pieces(total)

    def frames() -> Iterator[bytes]:
        for piece in pieces:
            yield (f"{len(piece):x}\r\n".encode() + piece + b"\r\n") if chunked_body else piece
        if chunked_body:
            yield b"0\r\n\r\n"

    sent, pending, source = 0, b"", frames()
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not pending:
                pending = next(source, b"")
                if not pending:
                    break
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable:
                break  # an early answer (or a close): stop sending
            if writable:
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += n
                pending = pending[n:]
        sock.setblocking(True)
        sock.settimeout(30)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                more = sock.recv(65536)
                if not more:
                    break
                data += more
            head, _, rest = data.partition(b"\r\n\r\n")
            match = re.search(rb"content-length:\s*(\d+)", head, re.I)
            if match:
                while len(rest) < int(match.group(1)):
                    more = sock.recv(65536)
                    if not more:
                        break
                    rest += more
                data = head + b"\r\n\r\n" + rest
        except (ConnectionResetError, TimeoutError):
            pass
    finally:
        sock.close()
    status = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(status.group(1)) if status else None), data, sent


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, int, str]]:
    """`uvicorn api.main:app` on 127.0.0.1 over an SQLite database; yields (proc, port, key)."""
    tmp = tmp_path_factory.mktemp("hostile-live")
    db_url, key = sqlite_with_key(tmp, tenant_name="big-body")
    env = base_env() | {"SG_ENV": "dev", "SG_DATA_DIR": str(tmp / "data"), "SG_DB__URL": db_url}
    port = free_port()
    proc = Proc("api", [str(VENV_BIN / "uvicorn"), "api.main:app", "--host", "127.0.0.1",
                        "--port", str(port), "--log-level", "warning"], env,
                tmp / "logs" / "api.log")
    try:
        wait_ready(f"http://127.0.0.1:{port}", [proc], timeout_s=60)
        yield proc, port, key
    finally:
        proc.stop()


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
def test_200mb_json_body_is_refused_while_reading(live_api: tuple[Proc, int, str],
                                                  transfer: str) -> None:
    proc, port, key = live_api
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(3):  # warm up: routes, validation and the error path are loaded
        httpx.post(f"{base}/v1/jobs", json={"name": "w"}, headers=headers, timeout=10)
        httpx.get(f"{base}/v1/jobs", headers=headers, timeout=10)
    baseline = rss_bytes(proc.pid)
    sampler = RssSampler(proc.pid)
    sampler.start()
    started = time.monotonic()
    try:
        status, raw, sent = stream_post(port, "/v1/jobs", key, total=BIG_BODY_BYTES,
                                        chunked_body=transfer == "chunked")
    finally:
        time.sleep(0.2)
        sampler.done.set()
        sampler.join(timeout=5)
    elapsed = time.monotonic() - started
    grown = sampler.peak - baseline
    proc.check_alive()
    report = (f"status {status}, sent {sent / MiB:.1f} MiB in {elapsed:.1f} s, RSS baseline "
              f"{baseline / MiB:.0f} MiB, peak {sampler.peak / MiB:.0f} MiB (+{grown / MiB:.0f}); "
              f"answer {raw[:400]!r}")
    assert status == 413, report
    assert grown < RSS_BUDGET_BYTES, report
    body = json.loads(raw.partition(b"\r\n\r\n")[2] or b"{}")
    assert body.get("error", {}).get("field") == "body", report
    assert elapsed < 20, report
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200  # still serving
    if os.environ.get("HOSTILE_VERBOSE"):
        print(report)  # noqa: T201
