"""The checked-in Python client (clients/python) is what `make client` writes from the document.

The test runs scripts/gen_client.sh (openapi-python-client from .venv) into a temp dir and
compares every file with clients/python as git sees it (ignored caches left out), both ways. No
server is needed: the generator reads only docs/openapi.json. That the document itself matches
the app is tests/unit/test_openapi_contract.py's job.

Run: .venv/bin/pytest tests/unit/test_client_drift.py
"""

from __future__ import annotations

import difflib
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = REPO_ROOT / "clients" / "python"


def generated_files(root: Path) -> dict[str, bytes]:
    """Relative path -> content of every file the generator wrote under `root`."""
    return {"/".join(p.relative_to(root).parts): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def checked_in_files() -> dict[str, bytes]:
    """Relative path -> content of every file of clients/python that git sees (tracked, or new and
    not ignored): caches and build leftovers (.pdm-build, __pycache__, .ruff_cache) are ignored
    there, so an installed or linted package compares the same."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--",
         str(CLIENT_DIR.relative_to(REPO_ROOT))],
        cwd=REPO_ROOT, capture_output=True, check=True, timeout=60).stdout.decode()
    found = {}
    for name in sorted(set(filter(None, listed.split("\0")))):
        path = REPO_ROOT / name
        if path.is_file():  # a tracked file deleted from the work tree is missing
            found[path.relative_to(CLIENT_DIR).as_posix()] = path.read_bytes()
    return found


def first_difference(path: str, checked_in: bytes, generated: bytes) -> str:
    """A few lines of unified diff, enough to see what changed."""
    diff = difflib.unified_diff(checked_in.decode(errors="replace").splitlines(),
                                generated.decode(errors="replace").splitlines(),
                                f"clients/python/{path}", f"generated/{path}", lineterm="", n=1)
    return "\n".join(list(diff)[:12])


@pytest.mark.timeout(180)
def test_checked_in_client_matches_the_generator(tmp_path: Path) -> None:
    out = tmp_path / "python"
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "gen_client.sh"), str(out)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=150,
                            check=False)
    assert result.returncode == 0, f"scripts/gen_client.sh failed:\n{result.stdout}{result.stderr}"

    generated, checked_in = generated_files(out), checked_in_files()
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
