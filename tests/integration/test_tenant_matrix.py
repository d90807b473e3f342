"""Cross-tenant matrix, generated from the OpenAPI document (issue 6, test 2).

Every operation whose path takes a `{...}` parameter is called by tenant `b` with tenant `a`'s
real ids (a completed job with metrics rows, events, published `best`/`last` checkpoints and test
metrics; a real dataset): the answer is 404 in the error shape and shows none of `a`'s data (its
other ids, its tenant id, names, sha256 sums, key prefixes). Tenant `a` making the same calls gets
an answer (not 404, not 5xx): the positive control. `a`'s job is unchanged by `b`'s calls.

`PATH_IDS` maps each path parameter name to the id used; a route whose parameter is not in it
fails `test_every_id_taking_route_is_covered` (and its own matrix row), so a new id-taking route
cannot slip through. Runs on PostgreSQL and SQLite (the `world` fixture of hostile_fixtures.py).

Run: .venv/bin/pytest -m integration tests/integration/test_tenant_matrix.py
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from streamguard.db import jobs as jobs_repo
from streamguard.settings import Settings
from tests.integration import api_fixtures, hostile_fixtures
from tests.integration.hostile_fixtures import SECRET_DATASET_NAME, SECRET_JOB_NAME, World

# Fixtures (integration/conftest.py is owned elsewhere).
api_db_url = api_fixtures.api_db_url
api_sessions = api_fixtures.api_sessions
world = hostile_fixtures.world

pytestmark = pytest.mark.integration

HTTP_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")

#: Path parameter -> the value tenant `b` sends (always tenant `a`'s).
PATH_IDS: dict[str, Callable[[World], str]] = {
    "job_id": lambda w: w.jobs["a_completed"],
    "dataset_id": lambda w: w.datasets["train"],
    "name": lambda w: "best",  # the checkpoint of a's job
}
#: Id-like query parameters an operation may also take: sent when the operation has them.
QUERY_IDS: dict[str, Callable[[World], str]] = {
    "last_event_id": lambda w: str(w.events["a_completed"][0]),
}


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, item in doc["paths"].items():
        if "{" not in path:
            continue
        for method, op in item.items():
            if method in HTTP_METHODS:
                ops.append((method, path, op))
    return sorted(ops, key=lambda o: (o[1], o[0]))


def _document() -> dict[str, Any]:
    """The app's OpenAPI document, built without starting it (nothing is read or connected)."""
    folder = Path(tempfile.gettempdir()) / "sg-tenant-matrix-openapi"
    return create_app(Settings(data_dir=folder)).openapi()


OPERATIONS = _operations(_document())


def path_params(path: str) -> list[str]:
    return re.findall(r"{([^}]+)}", path)


def build_call(w: World, method: str, path: str, op: dict[str, Any]
               ) -> tuple[str, dict[str, Any], set[str]]:
    """(url, request kwargs, the values placed in the request)."""
    used: set[str] = set()
    url = path
    for name in path_params(path):
        value = PATH_IDS[name](w)
        used.add(value)
        url = url.replace("{" + name + "}", value)
    params = {}
    for param in op.get("parameters", []):
        if param.get("in") == "query" and param["name"] in QUERY_IDS:
            params[param["name"]] = QUERY_IDS[param["name"]](w)
            used.add(params[param["name"]])
    kwargs: dict[str, Any] = {"params": params or None}
    if "application/json" in (op.get("requestBody") or {}).get("content", {}):
        kwargs["json"] = {}
    return url, kwargs, used


def a_secrets(w: World) -> set[str]:
    """Everything of tenant a's that tenant b must not read."""
    secrets = {w.tenant("a"), f"tenants/{w.tenant('a')}", SECRET_JOB_NAME, SECRET_DATASET_NAME,
               "a-queued", "a-vocab"}
    secrets |= {v for k, v in w.jobs.items() if k.startswith("a_")}
    secrets |= {v for k, v in w.datasets.items() if not k.startswith("b_")}
    secrets |= {v for k, v in w.sha256.items() if k.startswith("a-")}
    return secrets


def call(w: World, tenant: str, method: str, url: str, kwargs: dict[str, Any]) -> httpx.Response:
    return w.h.client.request(method.upper(), url, headers=w.h.auth(tenant),
                              follow_redirects=False, **kwargs)


def job_state(w: World) -> tuple[Any, ...]:
    """Tenant a's job as stored (read from the database, not through the API under test)."""
    job_id = w.jobs["a_completed"]
    with w.h.sessions() as session:
        job = jobs_repo.get_job(session=session, job_id=job_id)
        assert job is not None
        transitions = jobs_repo.list_transitions(session=session, job_id=job_id)
        return (job.status, job.cancel_requested, job.finished_at, job.fencing_token,
                len(transitions))


def test_every_id_taking_route_is_covered() -> None:
    """A route taking a path parameter that PATH_IDS does not map fails here."""
    live = _operations(create_app(Settings(
        data_dir=Path(tempfile.gettempdir()) / "sg-tenant-matrix-openapi")).openapi())
    assert live, "no id-taking operation in the OpenAPI document"
    uncovered = sorted({f"{m.upper()} {p} ({name})" for m, p, _op in live
                        for name in path_params(p) if name not in PATH_IDS})
    assert not uncovered, f"id-taking routes not in PATH_IDS: {uncovered}"
    paths = {p for _m, p, _op in live}
    # the routes the issue names are all in the document (none silently dropped)
    assert {"/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/metrics",
            "/v1/jobs/{job_id}/events", "/v1/jobs/{job_id}/checkpoints",
            "/v1/jobs/{job_id}/checkpoints/{name}/download",
            "/v1/datasets/{dataset_id}"} <= paths, sorted(paths)


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS,
                         ids=[f"{m}-{p}" for m, p, _ in OPERATIONS])
def test_other_tenant_gets_404_and_none_of_the_data(world: World, method: str, path: str,
                                                    op: dict[str, Any]) -> None:
    missing = [name for name in path_params(path) if name not in PATH_IDS]
    assert not missing, f"{method.upper()} {path}: add {missing} to PATH_IDS"
    url, kwargs, used = build_call(world, method, path, op)
    before = job_state(world)
    response = call(world, "b", method, url, kwargs)
    assert response.status_code == 404, (method, url, response.status_code, response.text[:500])
    if method != "head":
        assert response.headers.get("content-type", "").startswith("application/json"), \
            response.headers
        error = response.json()["error"]
        assert error["code"] == "not_found", error
        shown = sorted(s for s in a_secrets(world) - used if s in response.text)
        assert not shown, f"{method.upper()} {url} shows tenant a's {shown}: {response.text}"
    assert job_state(world) == before, "tenant b's call changed tenant a's job"


@pytest.mark.parametrize(("method", "path", "op"), OPERATIONS,
                         ids=[f"{m}-{p}" for m, p, _ in OPERATIONS])
def test_owner_gets_an_answer(world: World, method: str, path: str, op: dict[str, Any]) -> None:
    url, kwargs, _used = build_call(world, method, path, op)
    response = call(world, "a", method, url, kwargs)
    assert response.status_code != 404 and response.status_code < 500, \
        (method, url, response.status_code, response.text[:500])
