"""The checked-in Python client (clients/python) is what `make client` writes from the document.

The test runs scripts/gen_client.sh (openapi-python-client from .venv) into a temp dir and
compares every file with clients/python, both ways. No server is needed: the generator reads
only docs/openapi.json. That the document itself matches the app is
tests/unit/test_openapi_contract.py's job.

Run: .venv/bin/pytest tests/unit/test_client_drift.py
"""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO_ROOT / "clients" / "python"
GENERATOR = REPO_ROOT / ".venv" / "bin" / "openapi-python-client"
#: What building, installing or importing the package leaves behind (all git-ignored); the
#: generator writes none of it.
LEFTOVERS = {"__pycache__", ".ruff_cache", ".mypy_cache", ".pytest_cache", "build", "dist"}


def files_under(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file under `root`, build leftovers skipped."""
    found = {}
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p in LEFTOVERS or p.endswith((".egg-info", ".pyc")) for p in parts):
            continue
        if path.is_file():
            found["/".join(parts)] = path.read_bytes()
    return found


def first_difference(path: str, checked_in: bytes, generated: bytes) -> str:
    """A few lines of unified diff, enough to see what changed."""
    diff = difflib.unified_diff(checked_in.decode(errors="replace").splitlines(),
                                generated.decode(errors="replace").splitlines(),
                                f"clients/python/{path}", f"generated/{path}", lineterm="", n=1)
    return "\n".join(list(diff)[:12])


@pytest.mark.timeout(180)
def test_checked_in_client_matches_the_generator(tmp_path: Path) -> None:
    if not GENERATOR.exists():
        pytest.skip(f"{GENERATOR} missing (scripts/install.sh installs the dev extra)")
    out = tmp_path / "python"
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gen_client.sh"), str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=150,
                            check=False)
    assert result.returncode == 0, f"scripts/gen_client.sh failed:\n{result.stdout}{result.stderr}"

    generated, checked_in = files_under(out), files_under(CLIENT_DIR)
    assert generated, "scripts/gen_client.sh wrote no files"
    missing = sorted(generated.keys() - checked_in.keys())
    extra = sorted(checked_in.keys() - generated.keys())
    changed = sorted(p for p in generated.keys() & checked_in.keys()
                     if generated[p] != checked_in[p])
    if missing or extra or changed:
        lines = ["clients/python is stale: run `make client`"]
        lines += [f"  missing (the generator writes it): {p}" for p in missing]
        lines += [f"  extra (the generator no longer writes it): {p}" for p in extra]
        lines += [f"  differs: {p}" for p in changed]
        lines += [first_difference(p, checked_in[p], generated[p]) for p in changed[:3]]
        pytest.fail("\n".join(lines), pytrace=False)
