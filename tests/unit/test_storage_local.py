"""LocalArtifactStore, store_from_uri (local schemes) and the manifest helpers on a local store.

Run: .venv/bin/pytest tests/unit/test_storage_local.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from streamguard.errors import StorageError
from streamguard.manifest import (
    build_manifest,
    fetch_dir,
    publish_dir,
    read_pointer,
    write_pointer,
)
from streamguard.storage import (
    ArtifactNotFound,
    ArtifactStore,
    LocalArtifactStore,
    ObjectInfo,
    sha256_file,
    store_from_uri,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


def test_is_an_artifact_store(store: LocalArtifactStore) -> None:
    assert isinstance(store, ArtifactStore)


def test_file_and_bytes_round_trip(store: LocalArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    store.put_file(src, "jobs/1/model.bin")
    dest = tmp_path / "out" / "deep" / "model.bin"
    store.get_file("jobs/1/model.bin", dest)
    assert dest.read_bytes() == src.read_bytes()

    store.put_bytes(b'{"step": 3}', "jobs/1/best.json")
    assert store.get_bytes("jobs/1/best.json") == b'{"step": 3}'
    store.put_bytes(b"replaced", "jobs/1/best.json")
    assert store.get_bytes("jobs/1/best.json") == b"replaced"
    assert store.exists("jobs/1/best.json")
    assert store.local_path("jobs/1/model.bin") == store.root / "jobs" / "1" / "model.bin"


@pytest.mark.parametrize(
    "key", ["../evil", "a/../../evil", "/etc/passwd", "", "a//b", "./a", "a\\b", "a/"]
)
def test_keys_that_escape_or_are_malformed_are_refused(store: LocalArtifactStore,
                                                       key: str) -> None:
    with pytest.raises(StorageError, match="invalid artifact key"):
        store.put_bytes(b"x", key)
    with pytest.raises(StorageError):
        store.exists(key)


def test_symlink_escaping_root_is_refused(store: LocalArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "link").symlink_to(outside)
    with pytest.raises(StorageError, match="outside the store root"):
        store.put_bytes(b"x", "link/file")
    assert not (outside / "file").exists()


def test_missing_key_names_the_key(store: LocalArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound, match="checkpoints/nope.pt"):
        store.get_file("checkpoints/nope.pt", tmp_path / "x")
    with pytest.raises(StorageError, match="checkpoints/nope.json"):
        store.get_bytes("checkpoints/nope.json")
    assert not (tmp_path / "x").exists()
    assert not store.exists("checkpoints/nope.pt")
    store.delete("checkpoints/nope.pt")  # missing is not an error


def test_failed_put_keeps_old_object_and_leaves_no_temp(store: LocalArtifactStore,
                                                        tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    store.put_bytes(b"old", "ckpt/last.pt")
    src = tmp_path / "new.pt"
    src.write_bytes(b"new" * 1000)

    def broken_copy(fsrc, fdst, length=0):  # writes half, then the disk "fails"
        fdst.write(fsrc.read(100))
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfileobj", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        store.put_file(src, "ckpt/last.pt")
    assert store.get_bytes("ckpt/last.pt") == b"old"
    assert sorted(p.name for p in (store.root / "ckpt").iterdir()) == ["last.pt"]


def test_list_walks_with_string_prefix(store: LocalArtifactStore) -> None:
    for key in ["ckpt/step_000010/model.pt", "ckpt/step_000020/model.pt", "ckpt/last.json",
                "data/train.jsonl", "ckpt2/x"]:
        store.put_bytes(key.encode(), key)
    (store.root / "ckpt" / ".last.json.abc123.partial").write_bytes(b"in flight")

    assert [o.key for o in store.list("ckpt/")] == [
        "ckpt/last.json", "ckpt/step_000010/model.pt", "ckpt/step_000020/model.pt"]
    assert [o.key for o in store.list("ckpt/step_")] == [
        "ckpt/step_000010/model.pt", "ckpt/step_000020/model.pt"]
    assert [o.key for o in store.list("ckpt")][-1] == "ckpt2/x"
    assert len(store.list("")) == 5
    assert store.list("nothing/here") == []
    assert store.list("data/") == [ObjectInfo("data/train.jsonl", len(b"data/train.jsonl"))]
    with pytest.raises(StorageError):
        store.list("../")


def test_delete(store: LocalArtifactStore) -> None:
    store.put_bytes(b"x", "a/b")
    store.delete("a/b")
    assert not store.exists("a/b")


def test_uri_is_absolute_file_uri(store: LocalArtifactStore) -> None:
    uri = store.uri("jobs/1/model.pt")
    assert uri == f"file://{store.root}/jobs/1/model.pt"
    assert uri.startswith("file:///")


def test_sha256_file(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_store_from_uri_local_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = store_from_uri(f"file://{tmp_path}/a")
    assert isinstance(a, LocalArtifactStore) and a.root == tmp_path / "a"
    b = store_from_uri(str(tmp_path / "b"))
    assert isinstance(b, LocalArtifactStore) and b.root == tmp_path / "b"
    monkeypatch.chdir(tmp_path)
    c = store_from_uri("relative/c")
    assert isinstance(c, LocalArtifactStore) and c.root == tmp_path / "relative" / "c"


@pytest.mark.parametrize("uri", ["gs://bucket/x", "http://example.com/x", "file://host/x", "",
                                 "s3:///no-bucket"])
def test_store_from_uri_lists_supported_schemes(uri: str) -> None:
    with pytest.raises(StorageError, match="supported schemes: file://, s3://") as info:
        store_from_uri(uri)
    assert f"unsupported artifact store URI {uri!r}" in str(info.value)


def _checkpoint_dir(tmp_path: Path) -> Path:
    d = tmp_path / "ckpt"
    (d / "tokenizer").mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(50_000))
    (d / "meta.json").write_text('{"step": 500}')
    (d / "tokenizer" / "vocab.json").write_text("{}")
    return d


def test_build_manifest_lists_every_file(tmp_path: Path) -> None:
    d = _checkpoint_dir(tmp_path)
    manifest = build_manifest(d)
    assert [f["name"] for f in manifest["files"]] == [
        "meta.json", "model.safetensors", "tokenizer/vocab.json"]
    meta = manifest["files"][0]
    assert meta["size"] == len('{"step": 500}')
    assert meta["sha256"] == sha256_file(d / "meta.json")


def test_publish_writes_manifest_last_and_fetch_verifies(store: LocalArtifactStore,
                                                         tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    d = _checkpoint_dir(tmp_path)
    order: list[str] = []
    real_put_file, real_put_bytes = store.put_file, store.put_bytes
    monkeypatch.setattr(store, "put_file", lambda p, k: (order.append(k), real_put_file(p, k)))
    monkeypatch.setattr(store, "put_bytes", lambda b, k: (order.append(k), real_put_bytes(b, k)))

    manifest = publish_dir(store, d, "jobs/7/epoch-0005/")
    assert order[-1] == "jobs/7/epoch-0005/manifest.json"
    assert len(order) == 4
    assert json.loads(store.get_bytes("jobs/7/epoch-0005/manifest.json")) == manifest

    out = tmp_path / "fetched"
    assert fetch_dir(store, "jobs/7/epoch-0005", out) == manifest
    assert build_manifest(out) == manifest

    # Corrupt one stored file (same size): the checksum catches it and names the file.
    path = store.local_path("jobs/7/epoch-0005/tokenizer/vocab.json")
    path.write_text("[]")
    with pytest.raises(StorageError, match="checksum mismatch for 'tokenizer/vocab.json'"):
        fetch_dir(store, "jobs/7/epoch-0005", tmp_path / "again")
    assert not (tmp_path / "again" / "tokenizer" / "vocab.json").exists()
    fetch_dir(store, "jobs/7/epoch-0005", tmp_path / "unverified", verify=False)


def test_fetch_without_manifest_explains(store: LocalArtifactStore, tmp_path: Path) -> None:
    store.put_bytes(b"x", "half/model.pt")
    with pytest.raises(StorageError, match="no manifest at .*did not finish"):
        fetch_dir(store, "half", tmp_path / "out")


def test_fetch_refuses_manifest_names_escaping_local_dir(store: LocalArtifactStore,
                                                         tmp_path: Path) -> None:
    bad = {"format": 1, "files": [{"name": "../../evil", "size": 1, "sha256": "00"}]}
    store.put_bytes(json.dumps(bad).encode(), "evil/manifest.json")
    with pytest.raises(StorageError, match="invalid artifact key"):
        fetch_dir(store, "evil", tmp_path / "out")


def test_pointers(store: LocalArtifactStore) -> None:
    assert read_pointer(store, "checkpoints/best.json") is None
    write_pointer(store, "checkpoints/best.json", {"key_prefix": "ckpt/epoch-0005", "f1": 0.6})
    assert read_pointer(store, "checkpoints/best.json") == {
        "key_prefix": "ckpt/epoch-0005", "f1": 0.6}
    store.put_bytes(b"[1, 2]", "checkpoints/bad.json")
    with pytest.raises(StorageError, match="expected an object"):
        read_pointer(store, "checkpoints/bad.json")
