"""End to end in the embedded mode, with no servers: `streamguard up --no-demo` as a subprocess
(SQLite, Celery's filesystem broker, a file:// store, no Redis; it starts uvicorn and one real
Celery worker), driven over HTTP only. Same flow as the full-stack test; the download is the
archive streamed by the API (200, application/gzip) instead of an S3 redirect.

Run: .venv/bin/pytest -m integration tests/integration/test_e2e_embedded.py
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamguard.manifest import fetch_dir, read_pointer
from streamguard.storage import LocalArtifactStore
from tests.e2e.harness import (
    VENV_BIN,
    Api,
    Proc,
    base_env,
    check_completed_run,
    check_model_matches_worker,
    dump_logs,
    extract_archive,
    free_port,
    make_splits,
)

pytestmark = pytest.mark.integration

KEY_LINE = re.compile(r"API key for tenant 'dev': (\S+)")


@dataclass
class Embedded:
    api: Api
    data_dir: Path
    up: Proc

    def dump_logs(self) -> None:
        dump_logs([self.up])
        for name in ("api", "worker"):
            log = self.data_dir / "logs" / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            print(f"\n===== {name} ({log}) =====\n" + "\n".join(text.splitlines()[-80:]))  # noqa: T201


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    tmp = tmp_path_factory.mktemp("e2e_embedded")
    data_dir, port = tmp / "sg", free_port()
    env = base_env()  # no SG_ variable at all: the embedded defaults, no Redis
    up = Proc("streamguard-up", [str(VENV_BIN / "streamguard"), "up", "--no-demo",
                                 "--port", str(port), "--data-dir", str(data_dir)],
              env, tmp / "up.log", capture_stdout=True)
    box = Embedded(Api(f"http://127.0.0.1:{port}", "", [up]), data_dir, up)
    try:
        line = up.wait_for_output(lambda text: KEY_LINE.search(text) is not None, 180)
        match = KEY_LINE.search(line)
        assert match is not None
        box.api.key = match.group(1)
        yield box
    except BaseException:
        box.dump_logs()
        raise
    finally:
        up.stop()  # SIGTERM: `up` stops its API and worker; stragglers are killed by pid


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, embedded: Embedded) -> Iterator[None]:
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        embedded.dump_logs()


def test_embedded_train_download_and_reload(embedded: Embedded, devign: Path,
                                            tmp_path: Path) -> None:
    api, data_dir = embedded.api, embedded.data_dir
    # really the no-server deployment: SQLite file, filesystem broker, local artifacts
    assert (data_dir / "streamguard.db").is_file()
    assert (data_dir / "broker" / "queue").is_dir()
    ready = api.get("/readyz")
    assert ready["status"] == "ready", ready

    splits = make_splits(devign, tmp_path / "devign")
    refs = api.upload_splits(splits)
    job_id = api.submit(refs)["id"]
    events = api.follow(job_id, timeout_s=240)
    run = check_completed_run(api, job_id, events, epochs=2)
    best = run["best"]

    with api.client() as c:
        r = c.get(f"/v1/jobs/{job_id}/checkpoints/best/download")
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == "application/gzip"
    assert f"{job_id}-best.tar.gz" in r.headers["content-disposition"]
    assert hashlib.sha256(r.content).hexdigest() == best["sha256"]
    assert len(r.content) == best["size_bytes"]

    store = LocalArtifactStore(data_dir / "artifacts")
    tenant_dirs = list((data_dir / "artifacts" / "tenants").iterdir())
    assert len(tenant_dirs) == 1, tenant_dirs  # tenant `dev` only
    prefix = f"tenants/{tenant_dirs[0].name}/jobs/{job_id}/checkpoints/"
    pointer = read_pointer(store, prefix + "best.json")
    assert pointer is not None and pointer["sha256"] == best["sha256"], pointer
    state_dir = tmp_path / "best_checkpoint"
    fetch_dir(store, pointer["key_prefix"], state_dir)  # sha256-verified

    model_dir = extract_archive(r.content, tmp_path / "download")
    best_epoch = run["job"]["best_epoch"]
    check_model_matches_worker(model_dir, state_dir, splits["val"], run["metrics"][best_epoch],
                               best_epoch)
