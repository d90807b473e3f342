"""A serving API process tunes Python's garbage collector at the end of startup (`api.gctune`):
startup's objects frozen, a young collection every `api.gc_gen0_threshold` allocations. An app
built with `create_app()` inside another process (tests, embedding) leaves it alone.

Each case runs in a fresh interpreter: the collector is process-wide, and this test process's
must stay as Python set it."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.gctune import tune_gc

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc, json, sys
from fastapi.testclient import TestClient
import api.main
before = gc.get_threshold()
app = api.main.serve_app() if sys.argv[1] == "serve_app" else api.main.create_app()
with TestClient(app) as client:
    status = client.get("/healthz").status_code
    during = {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
print(json.dumps({"status": status, "before": before, **during}))
"""


def _serve(tmp_path: Path, factory: str, **env_extra: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SG_")}
    env.update(PYTHONPATH=str(ROOT), SG_ENV="dev", SG_DATA_DIR=str(tmp_path / "sg"), **env_extra)
    proc = subprocess.run([sys.executable, "-c", PROBE, factory], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    return result


def test_a_serving_process_freezes_startup_and_collects_less_often(tmp_path: Path) -> None:
    result = _serve(tmp_path, "serve_app")
    before = result["before"]
    assert isinstance(before, list) and before[0] < 50_000  # Python's own default (700 on 3.11)
    assert result["threshold"] == [50_000, before[1], before[2]]
    # Everything the app's startup built (modules, routes, schemas): tens of thousands.
    assert isinstance(result["frozen"], int) and result["frozen"] > 10_000


def test_the_threshold_is_a_setting_and_zero_leaves_the_collector_alone(tmp_path: Path) -> None:
    tuned = _serve(tmp_path, "serve_app", SG_API__GC_GEN0_THRESHOLD="20000")
    assert isinstance(tuned["threshold"], list) and tuned["threshold"][0] == 20_000
    untouched = _serve(tmp_path, "serve_app", SG_API__GC_GEN0_THRESHOLD="0")
    assert untouched["threshold"] == untouched["before"]
    assert untouched["frozen"] == 0


def test_an_embedded_app_leaves_its_host_process_collector_alone(tmp_path: Path) -> None:
    result = _serve(tmp_path, "create_app")
    assert result["threshold"] == result["before"]
    assert result["frozen"] == 0


def test_zero_is_a_no_op_in_this_process() -> None:
    before = (gc.get_threshold(), gc.get_freeze_count())
    assert tune_gc(0) is None
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_a_negative_threshold_is_refused_by_the_settings() -> None:
    from pydantic import ValidationError

    from streamguard.settings import ApiSettings

    with pytest.raises(ValidationError, match="gc_gen0_threshold"):
        ApiSettings(gc_gen0_threshold=-1)
