"""The package as a user installs it: a wheel built from this checkout, installed into fresh
virtual environments, run from a folder outside the repository (so nothing is imported from the
checkout).

- `streamguard[api]`: no torch or transformers is even installed; `import api.main` loads
  neither; the migrations shipped in the wheel run (`streamguard db upgrade`); a real uvicorn
  serves /healthz and /readyz on SQLite and a local store.
- `streamguard[all]` (torch pinned to the local CPU wheel by scripts/constraints-cpu.txt):
  `streamguard keys create`, then `streamguard up --exit-after-demo`: the installed entry point
  runs the API, a Celery worker and the inference worker, and a tiny job trains through HTTP.

Slow: each environment takes minutes to install (here: [api] about 1 min, [all] about 4-5 min
cold, less with pip's cache warm), and the demo job trains for an epoch.

Run: .venv/bin/python -m pytest -m slow tests/integration/test_packaging.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import THREAD_ENV, child_pids, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
#: What a wheel is built from (a copy: an in-tree build/ could carry stale modules into it).
SOURCES = ("pyproject.toml", "README.md", "streamguard", "api", "worker", "migrations")
INSTALL_TIMEOUT_S = 1500


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH, SG_ settings or a virtualenv of ours."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SG_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **THREAD_ENV, **extra}


def run(cmd: Sequence[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env or clean_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, src / name)
    run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)], cwd=src, timeout=300)
    (built,) = out.glob("streamguard-*.whl")
    return built


def make_venv(path: Path, requirement: str, *constraints: Path) -> Path:
    """A fresh virtualenv with `requirement` installed; its python."""
    run([sys.executable, "-m", "venv", str(path)], cwd=path.parent, timeout=120)
    python = path / "bin" / "python"
    args = [arg for c in constraints for arg in ("-c", str(c))]
    run([str(python), "-m", "pip", "install", "-q", *args, requirement], cwd=path.parent,
        timeout=INSTALL_TIMEOUT_S)
    return python


@pytest.fixture(scope="module")
def api_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("venv-api") / "venv", f"{wheel}[api]")


@pytest.fixture(scope="module")
def all_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_venv(tmp_path_factory.mktemp("venv-all") / "venv", f"{wheel}[all]",
                     ROOT / "scripts" / "constraints-cpu.txt")


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """A working folder outside the checkout (so `-m` and cwd imports cannot find it)."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    assert ROOT not in folder.parents
    return folder


def test_api_extra_installs_and_serves_without_torch(api_venv: Path, outside: Path) -> None:
    bin_dir = api_venv.parent
    probe = ("import importlib.util, json, sys\n"
             "import api.main, streamguard, migrations\n"
             "api.main.create_app()\n"
             "print(json.dumps({'installed': {m: importlib.util.find_spec(m) is not None\n"
             "                                for m in ('torch', 'transformers')},\n"
             "                  'loaded': [m for m in ('torch', 'transformers', 'numpy')\n"
             "                             if m in sys.modules],\n"
             "                  'files': [streamguard.__file__, migrations.__file__]}))")
    found = json.loads(run([str(api_venv), "-c", probe], cwd=outside, timeout=120).stdout)
    assert found["installed"] == {"torch": False, "transformers": False}, found
    assert found["loaded"] == [], found
    for path in found["files"]:  # the wheel's copies, not this checkout's
        assert Path(path).is_relative_to(api_venv.parents[1]), found

    version = run([str(bin_dir / "streamguard"), "--version"], cwd=outside, timeout=60).stdout
    assert version.startswith("streamguard ")
    data_dir = outside / "sg"
    migrated = run([str(bin_dir / "streamguard"), "db", "upgrade", "--data-dir", str(data_dir)],
                   cwd=outside, timeout=120).stdout
    assert "migrated to head" in migrated

    port = free_port()
    env = clean_env(SG_ENV="dev", SG_DATA_DIR=str(data_dir))
    log = (outside / "uvicorn.log").open("wb")
    server = subprocess.Popen([str(bin_dir / "uvicorn"), "--factory", "api.main:create_app",
                               "--host", "127.0.0.1", "--port", str(port)], cwd=outside,
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = ready = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        text = (outside / "uvicorn.log").read_text(errors="replace")
        assert health is not None and ready is not None, f"no answer; uvicorn log:\n{text}"
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        log.close()


def test_keys_create_from_the_installed_entry_point(all_venv: Path, outside: Path) -> None:
    out = run([str(all_venv.parent / "streamguard"), "keys", "create", "--tenant", "acme",
               "--data-dir", str(outside / "sg")], cwd=outside, timeout=120).stdout
    assert "API key for tenant 'acme'" in out
    assert out.strip().splitlines()[-1].startswith("sg_"), out


@pytest.fixture()
def up_process(all_venv: Path, outside: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`streamguard up --exit-after-demo` (1 epoch), stopped with its children however the
    test ends."""
    cmd = [str(all_venv.parent / "streamguard"), "up", "--exit-after-demo", "--demo-epochs",
           "1", "--port", str(free_port()), "--data-dir", str(outside / "up")]
    with (outside / "up.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=outside, env=clean_env(), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            kids = child_pids(proc.pid) if proc.poll() is None else []
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # `up` stops its API and workers
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
            for kid in kids:
                if Path(f"/proc/{kid}").exists():
                    os.kill(kid, signal.SIGKILL)


def test_up_trains_a_demo_job_from_the_installed_wheel(up_process: subprocess.Popen[bytes],
                                                       outside: Path) -> None:
    try:
        code = up_process.wait(timeout=600)
    except subprocess.TimeoutExpired:
        code = None
    text = (outside / "up.log").read_text(errors="replace")
    logs = outside / "up" / "logs"
    detail = text + "".join(f"\n===== {p.name} =====\n" + p.read_text(errors="replace")[-3000:]
                            for p in sorted(logs.glob("*.log"))) if logs.is_dir() else text
    assert code == 0, f"`streamguard up` exit {code}:\n{detail}"
    assert "API key for tenant 'dev'" in text
    outcome = [line for line in text.splitlines() if line.startswith("outcome ")]
    assert outcome and not outcome[-1].startswith("outcome failed"), detail
    # the children ran the wheel's code too: the API's log names no path in this checkout
    assert str(ROOT) not in detail
