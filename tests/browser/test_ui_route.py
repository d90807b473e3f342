"""The dashboard's files as the API serves them (no browser, no services: TestClient on SQLite).

Served without a key, with the security headers, past the edge middleware; `/` redirects;
nothing of it is in the OpenAPI document; /v1 still needs the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.routes.ui import UI_DIR
from streamguard.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = Settings(env="dev", data_dir=tmp_path_factory.mktemp("sg"))
    with TestClient(create_app(settings)) as c:
        yield c


def test_root_redirects_to_the_dashboard(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui/"
    r = client.get("/ui", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"].endswith("/ui/")


def test_every_file_is_served_without_a_key_with_the_security_headers(
        client: TestClient) -> None:
    files = [p for p in UI_DIR.rglob("*") if p.is_file()]
    assert {"index.html", "app.js", "sse.js", "uPlot.iife.min.js", "LICENSE"} <= \
        {p.name for p in files}
    for path in files:
        r = client.get(f"/ui/{path.relative_to(UI_DIR).as_posix()}")
        assert r.status_code == 200, (path, r.text[:200])
        assert r.content == path.read_bytes()
        assert "default-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    index = client.get("/ui/")
    assert index.status_code == 200 and index.headers["cache-control"] == "no-cache"
    assert index.headers["content-type"].startswith("text/html")
    assert client.get("/ui/js/app.js").headers["content-type"].startswith("text/javascript")


def test_the_page_loads_nothing_from_another_origin() -> None:
    for path in UI_DIR.rglob("*"):
        if path.suffix in (".html", ".js", ".css") and "vendor" not in path.parts:
            text = path.read_text()
            assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path
            assert "fetch(`http" not in text and "fetch('http" not in text, path


def test_unknown_files_answer_404_in_the_error_shape(client: TestClient) -> None:
    r = client.get("/ui/nope.js")
    assert r.status_code == 404 and set(r.json()["error"]) >= {"code", "message", "request_id"}
    assert client.get("/ui/../pyproject.toml").status_code == 404


def test_the_api_still_needs_the_key_and_the_schema_has_no_ui(client: TestClient) -> None:
    assert client.get("/v1/jobs").status_code == 401
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and not [p for p in paths if p.startswith("/ui")]


def test_the_vendored_chart_library_keeps_its_license() -> None:
    vendor = UI_DIR / "vendor" / "uplot"
    assert (vendor / "uPlot.iife.min.js").read_text().startswith(
        "/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    assert "MIT License" in (vendor / "LICENSE").read_text()
    index = Path(UI_DIR / "index.html").read_text()
    assert 'src="vendor/uplot/uPlot.iife.min.js"' in index
    assert 'href="vendor/uplot/uPlot.min.css"' in index
