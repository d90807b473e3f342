"""S3ArtifactStore against moto's standalone S3 server over HTTP (real boto3, no mocks).

Run: .venv/bin/pytest -m integration tests/integration/test_storage_s3.py
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from streamguard.errors import StorageError
from streamguard.manifest import fetch_dir, publish_dir, read_pointer, write_pointer
from streamguard.storage import (
    ArtifactNotFound,
    ArtifactStore,
    LocalArtifactStore,
    ObjectInfo,
    S3ArtifactStore,
    store_from_uri,
)

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def test_file_and_bytes_round_trip(s3_store: S3ArtifactStore, tmp_path: Path) -> None:
    assert isinstance(s3_store, ArtifactStore)
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(300_000))
    s3_store.put_file(src, "jobs/1/model.bin")
    dest = tmp_path / "out" / "model.bin"
    s3_store.get_file("jobs/1/model.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["model.bin"]  # no temp left behind

    s3_store.put_bytes(b'{"step": 3}', "jobs/1/best.json")
    assert s3_store.get_bytes("jobs/1/best.json") == b'{"step": 3}'
    assert s3_store.exists("jobs/1/best.json")
    # Keys live under the store's prefix inside the bucket.
    raw = s3_store.client.head_object(Bucket=s3_store.bucket, Key="runs/jobs/1/best.json")
    assert raw["ContentLength"] == len(b'{"step": 3}')
    assert s3_store.uri("jobs/1/best.json") == f"s3://{s3_store.bucket}/runs/jobs/1/best.json"

    s3_store.delete("jobs/1/best.json")
    assert not s3_store.exists("jobs/1/best.json")
    s3_store.delete("jobs/1/best.json")  # missing is not an error


def test_large_file_goes_multipart(s3_server: str, tmp_path: Path) -> None:
    store = S3ArtifactStore("sg-multipart", endpoint_url=s3_server, multipart_threshold=1 * MiB,
                            multipart_chunksize=5 * MiB)
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(6 * MiB + 123))
    store.put_file(src, "big.bin")
    etag = store.client.head_object(Bucket="sg-multipart", Key="big.bin")["ETag"]
    assert etag.strip('"').endswith("-2"), etag  # S3 marks multipart objects "<md5>-<parts>"
    dest = tmp_path / "big.out"
    store.get_file("big.bin", dest)
    assert dest.read_bytes() == src.read_bytes()


def test_list_with_prefix(s3_store: S3ArtifactStore) -> None:
    for key in ["ckpt/step_000010/model.pt", "ckpt/step_000020/model.pt", "ckpt/last.json",
                "data/train.jsonl"]:
        s3_store.put_bytes(key.encode(), key)
    # An object outside the store's prefix stays invisible.
    s3_store.client.put_object(Bucket=s3_store.bucket, Key="other/ckpt/x", Body=b"x")

    assert [o.key for o in s3_store.list("ckpt/step_")] == [
        "ckpt/step_000010/model.pt", "ckpt/step_000020/model.pt"]
    assert [o.key for o in s3_store.list("ckpt/")][0] == "ckpt/last.json"
    assert len(s3_store.list("")) == 4
    assert s3_store.list("data/") == [ObjectInfo("data/train.jsonl", len(b"data/train.jsonl"))]
    assert s3_store.list("nothing/") == []


def test_list_follows_every_page(s3_store: S3ArtifactStore) -> None:
    for i in range(7):
        s3_store.put_bytes(b"", f"k/{i}")
    requests: list[str] = []
    s3_store.client.meta.events.register("before-call.s3.ListObjectsV2",
                                         lambda **kw: requests.append("list"))
    s3_store.list_page_size = 3  # 7 keys -> 3 pages, as 1001 keys would be with the default
    assert [o.key for o in s3_store.list("k/")] == [f"k/{i}" for i in range(7)]
    assert len(requests) == 3


def test_missing_key_errors_name_the_key(s3_store: S3ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(ArtifactNotFound, match="ckpt/nope.pt"):
        s3_store.get_file("ckpt/nope.pt", tmp_path / "nope.pt")
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file
    with pytest.raises(StorageError, match="ckpt/nope.json"):
        s3_store.get_bytes("ckpt/nope.json")
    assert not s3_store.exists("ckpt/nope.pt")
    with pytest.raises(StorageError, match="invalid artifact key"):
        s3_store.put_bytes(b"x", "../escape")


def test_missing_bucket_is_a_storage_error(s3_server: str) -> None:
    store = S3ArtifactStore("sg-never-created", endpoint_url=s3_server)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        store.put_bytes(b"x", "a")


def test_presigned_url_serves_the_bytes(s3_store: S3ArtifactStore) -> None:
    payload = os.urandom(10_000)
    s3_store.put_bytes(payload, "exports/model.onnx")
    url = s3_store.presigned_get_url("exports/model.onnx", expires_s=60)
    response = httpx.get(url)
    assert response.status_code == 200 and response.content == payload

    url = s3_store.presigned_get_url("exports/model.onnx", filename="modèle v1.onnx")
    response = httpx.get(url)
    assert response.content == payload
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="mod_le v1.onnx"')
    assert "filename*=UTF-8''mod%C3%A8le%20v1.onnx" in disposition


def test_publish_and_fetch_dir_detects_corruption(s3_store: S3ArtifactStore,
                                                  tmp_path: Path) -> None:
    src = tmp_path / "ckpt"
    (src / "tokenizer").mkdir(parents=True)
    (src / "model.safetensors").write_bytes(os.urandom(100_000))
    (src / "tokenizer" / "vocab.json").write_text('{"a": 1}')

    manifest = publish_dir(s3_store, src, "jobs/9/step_000100")
    write_pointer(s3_store, "jobs/9/best.json", {"key_prefix": "jobs/9/step_000100"})
    pointer = read_pointer(s3_store, "jobs/9/best.json")
    assert pointer == {"key_prefix": "jobs/9/step_000100"}
    assert read_pointer(s3_store, "jobs/9/last.json") is None

    out = tmp_path / "fetched"
    assert fetch_dir(s3_store, pointer["key_prefix"], out) == manifest
    assert (out / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()

    # Overwrite one object behind the store's back (same size, different content).
    s3_store.put_bytes(b'{"b": 2}', "jobs/9/step_000100/tokenizer/vocab.json")
    with pytest.raises(StorageError, match="checksum mismatch for 'tokenizer/vocab.json'"):
        fetch_dir(s3_store, "jobs/9/step_000100", tmp_path / "again")


def test_store_from_uri_schemes(s3_server: str, tmp_path: Path) -> None:
    s3 = store_from_uri("s3://sg-from-uri/some/prefix/", endpoint_url=s3_server)
    assert isinstance(s3, S3ArtifactStore)
    assert (s3.bucket, s3.prefix) == ("sg-from-uri", "some/prefix")
    s3.ensure_bucket()
    s3.put_bytes(b"hello", "a.txt")
    assert s3.uri("a.txt") == "s3://sg-from-uri/some/prefix/a.txt"
    assert s3.get_bytes("a.txt") == b"hello"

    bare = store_from_uri("s3://sg-from-uri", endpoint_url=s3_server)
    assert isinstance(bare, S3ArtifactStore) and bare.prefix == ""
    assert bare.get_bytes("some/prefix/a.txt") == b"hello"

    assert isinstance(store_from_uri(f"file://{tmp_path}/store"), LocalArtifactStore)
    assert isinstance(store_from_uri(str(tmp_path / "plain")), LocalArtifactStore)
    with pytest.raises(StorageError) as info:
        store_from_uri("gs://bucket/prefix")
    assert str(info.value).startswith(
        "unsupported artifact store URI 'gs://bucket/prefix'; supported schemes: file://, s3://")
