"""Checkpoint manifests and pointers on top of any ArtifactStore.

A checkpoint folder is published as its files under `key_prefix/`, then `key_prefix/manifest.json`
(name, size and sha256 of every file) is written LAST. So a manifest that exists names a complete
upload, and a reader that starts from the manifest never sees half a checkpoint. Small JSON
pointers (`checkpoints/best.json`) are written only after what they point to is published.

    manifest = publish_dir(store, Path("/tmp/ckpt"), "tenants/<t>/jobs/<id>/checkpoints/epoch-0001")
    write_pointer(store, "jobs/42/checkpoints/best.json", {"key_prefix": "...", "step": 500})
    fetch_dir(store, read_pointer(store, "jobs/42/checkpoints/best.json")["key_prefix"], dest)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamguard.errors import StorageError
from streamguard.storage import ArtifactNotFound, ArtifactStore, check_key, sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


def build_manifest(local_dir: Path) -> dict[str, Any]:
    """Name (relative, `/`-separated), size and sha256 of every file under `local_dir`.

    A top-level `manifest.json` is left out: it is the manifest's own name.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise StorageError(f"cannot build a manifest: {root} is not a folder")
    files = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        if name == MANIFEST_NAME:
            continue
        files.append({"name": name, "size": path.stat().st_size, "sha256": sha256_file(path)})
    return {"format": MANIFEST_FORMAT, "files": files}


def _manifest_key(key_prefix: str) -> str:
    return f"{check_key(key_prefix.strip('/'))}/{MANIFEST_NAME}"


def publish_dir(store: ArtifactStore, local_dir: Path, key_prefix: str) -> dict[str, Any]:
    """Upload every file of `local_dir` under `key_prefix/`, then the manifest; return it."""
    prefix = check_key(key_prefix.strip("/"))
    manifest = build_manifest(local_dir)
    for entry in manifest["files"]:
        store.put_file(Path(local_dir) / entry["name"], f"{prefix}/{entry['name']}")
    # Last on purpose: the manifest's existence is the "upload complete" marker.
    store.put_bytes(_dumps(manifest), _manifest_key(prefix))
    return manifest


def read_manifest(store: ArtifactStore, key_prefix: str) -> dict[str, Any]:
    """Load and sanity-check `key_prefix/manifest.json`; StorageError if absent or malformed."""
    key = _manifest_key(key_prefix)
    try:
        manifest = _loads(store.get_bytes(key), key)
    except ArtifactNotFound as exc:
        raise StorageError(f"no manifest at {key}: the folder was never published "
                           "or its upload did not finish", field="key") from exc
    files = manifest.get("files")
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(files, list):
        raise StorageError(f"{key} is not a format-{MANIFEST_FORMAT} manifest "
                           "(expected {'format': 1, 'files': [...]})", field="key")
    for entry in files:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)
                and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)):
            raise StorageError(f"{key}: bad file entry {entry!r} "
                               "(expected name, size and sha256)", field="key")
        check_key(entry["name"])  # a manifest must not write outside local_dir
    return manifest


def fetch_dir(store: ArtifactStore, key_prefix: str, local_dir: Path, *,
              verify: bool = True) -> dict[str, Any]:
    """Download every file the manifest names into `local_dir`; return the manifest.

    With `verify`, each file's size and sha256 are checked; a mismatch removes the bad file and
    raises StorageError naming it.
    """
    prefix = key_prefix.strip("/")
    manifest = read_manifest(store, prefix)
    dest_root = Path(local_dir)
    for entry in manifest["files"]:
        name = entry["name"]
        dest = dest_root / name
        store.get_file(f"{prefix}/{name}", dest)
        if not verify:
            continue
        size = dest.stat().st_size
        actual = sha256_file(dest) if size == entry["size"] else None
        if actual != entry["sha256"]:
            dest.unlink(missing_ok=True)
            got = f"sha256 {actual}" if actual else f"{size} bytes"
            want = f"sha256 {entry['sha256']}" if actual else f"{entry['size']} bytes"
            raise StorageError(f"checksum mismatch for {name!r} in {prefix}: "
                               f"expected {want}, got {got}", field="key")
    return manifest


def write_pointer(store: ArtifactStore, key: str, payload: dict[str, Any]) -> None:
    """Store a small JSON object (`checkpoints/best.json`).

    Call it only after the upload the payload points to has returned: the pointer is the
    commit record, and readers trust it.
    """
    store.put_bytes(_dumps(payload), key)


def read_pointer(store: ArtifactStore, key: str) -> dict[str, Any] | None:
    """The JSON object stored under `key`, or None if there is none yet."""
    try:
        data = store.get_bytes(key)
    except ArtifactNotFound:
        return None
    return _loads(data, key)


def _dumps(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _loads(data: bytes, key: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{key!r} does not hold valid JSON: {exc}", field="key") from exc
    if not isinstance(value, dict):
        raise StorageError(f"{key!r} holds JSON {type(value).__name__}, expected an object",
                           field="key")
    return value
