"""The API process never loads torch or transformers (the `[api]` extra installs neither):
`api.main` imported with both made unimportable, and /healthz served. The installed-wheel
version of this check is tests/integration/test_packaging.py (slow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
for name in ("torch", "transformers", "tokenizers", "safetensors"):
    sys.modules[name] = None  # `import torch` now raises, as on an [api]-only install
from fastapi.testclient import TestClient
import api.main
with TestClient(api.main.create_app()) as client:
    r = client.get("/healthz")
print(r.status_code, r.json()["status"])
"""


def test_api_imports_and_serves_without_torch_or_transformers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SG_")}
    env.update(PYTHONPATH=str(ROOT), SG_ENV="dev", SG_DATA_DIR=str(tmp_path / "sg"))
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "200 ok"
