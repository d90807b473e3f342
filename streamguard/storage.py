"""Artifact stores: one protocol, a local-folder and an S3 implementation, chosen by URI.

Keys are `/`-separated relative paths (`jobs/<id>/checkpoints/epoch-003/model.safetensors`).
`store_from_uri("file:///abs/dir")` or `store_from_uri("s3://bucket/prefix")` picks the backend;
boto3 is imported only by the S3 store, so the training core never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int


@runtime_checkable
class ArtifactStore(Protocol):
    """Where checkpoints, datasets and exported models live."""

    def put_file(self, local_path: str | Path, key: str) -> None:
        """Upload a local file under `key` (replacing any object there)."""

    def get_file(self, key: str, local_path: str | Path) -> None:
        """Download `key` to `local_path`; raises StorageError if it does not exist."""

    def put_bytes(self, data: bytes, key: str) -> None:
        """Store a small object (manifests, pointers)."""

    def get_bytes(self, key: str) -> bytes:
        """Read a small object; raises StorageError if it does not exist."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""

    def delete(self, key: str) -> None:
        """Remove an object; a missing key is not an error."""

    def uri(self, key: str) -> str:
        """A URI naming the object (`file:///...` or `s3://bucket/key`)."""
