"""Fixtures for integration tests: real services on this machine, one section per service.

S3 is moto's standalone server spoken to over HTTP by real boto3 (no in-process mocking).
Run: .venv/bin/pytest -m integration tests/integration
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator

import pytest

from streamguard.storage import S3ArtifactStore


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- S3 (moto server) -------------------------------------------------------------------------

S3_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole session; yields its endpoint URL.

    Fake credentials are set in the environment (and restored afterwards) so boto3's normal
    credential chain finds them, exactly as it would find real ones in production.
    """
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in S3_TEST_ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
            mp.delenv(name, raising=False)
        port = free_port()
        # Bind loopback explicitly: moto's default is every interface.
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture
def s3_store(s3_server: str) -> S3ArtifactStore:
    """An S3ArtifactStore with prefix `runs` on a fresh, empty bucket."""
    store = S3ArtifactStore(f"sg-test-{uuid.uuid4().hex[:12]}", "runs", endpoint_url=s3_server)
    store.ensure_bucket()
    return store
