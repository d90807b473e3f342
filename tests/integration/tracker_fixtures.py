"""A real MLflow tracking server for the tracker tests (the full `mlflow` package, dev extra).

`mlflow server` runs in its own process group on a free loopback port with a SQLite backend and
a local artifact folder (proxied artifacts: clients upload through the server, as in a real
deployment). Its readiness wait and its shutdown are bounded; the group is killed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

#: The server's first start migrates its SQLite database: ~25 s on a busy 2-core machine.
READY_TIMEOUT_S = 180.0


@dataclass
class MlflowServer:
    uri: str
    folder: Path
    process: subprocess.Popen[bytes]

    def log_tail(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")[-3000:]


def start_mlflow_server(folder: Path) -> MlflowServer:
    """Start `mlflow server` and wait (at most READY_TIMEOUT_S) for its /health to answer."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1",
               "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
               "--artifacts-destination", str(folder / "artifacts")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    server = MlflowServer(f"http://127.0.0.1:{port}", folder, process)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.5)
    stop_mlflow_server(server)
    pytest.fail(f"mlflow server not ready after {READY_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


def stop_mlflow_server(server: MlflowServer) -> None:
    """SIGTERM to the server's process group, SIGKILL after 15 s."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.process.pid, sig)
        except ProcessLookupError:
            break
        try:
            server.process.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # the uvicorn child may outlive the parent for a moment; the group goes with SIGKILL
    try:
        os.killpg(server.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    try:
        yield server
    finally:
        stop_mlflow_server(server)
