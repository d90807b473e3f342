"""Checkpoint publishing: immutable epoch folders, pointers moved after upload, stale ones deleted,
and the publisher's state survives a resume."""

import json
import tarfile
from pathlib import Path

from streamguard.manifest import read_pointer
from streamguard.sinks import ListSink
from streamguard.storage import LocalArtifactStore, sha256_file
from streamguard.training.publish import CheckpointPublisher


def fake_checkpoint(folder: Path, epoch: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(b"w" * epoch)
    (folder / "config.json").write_text(json.dumps({"epoch": epoch}))
    (folder / "training_state.pt").write_bytes(b"s")
    return folder


def versions(store: LocalArtifactStore) -> set[str]:
    return {o.key.split("/")[2] for o in store.list("p/checkpoints/") if o.key.count("/") >= 3}


def test_pointers_move_after_upload_and_stale_versions_go(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    sink = ListSink()
    pub = CheckpointPublisher(store, "p/", sink)
    pub.publish(fake_checkpoint(tmp_path / "c1", 1), epoch=1, is_best=True, metrics={"f1": 0.5})
    pub.publish(fake_checkpoint(tmp_path / "c2", 2), epoch=2, is_best=False, metrics={"f1": 0.4})
    assert read_pointer(store, "p/checkpoints/best.json")["epoch"] == 1
    assert read_pointer(store, "p/checkpoints/last.json")["epoch"] == 2
    assert versions(store) == {"epoch-0001", "epoch-0002"}
    assert [(k, p["name"], p["epoch"]) for k, p in sink.events] == [
        ("checkpoint", "last", 1), ("checkpoint", "best", 1), ("checkpoint", "last", 2)]

    resumed = CheckpointPublisher(store, "p/", sink)  # a new process after a resume
    resumed.load_state_dict(json.loads(json.dumps(pub.state_dict())))
    resumed.publish(fake_checkpoint(tmp_path / "c3", 3), epoch=3, is_best=True,
                    metrics={"f1": 0.6})
    assert versions(store) == {"epoch-0003"}  # epochs 1 and 2 referenced by nothing now
    assert not store.exists("p/checkpoints/epoch-0001.model.tar.gz")
    best = read_pointer(store, "p/checkpoints/best.json")
    archive = tmp_path / "best.tar.gz"
    store.get_file(best["archive_key"], archive)
    assert sha256_file(archive) == best["sha256"] and archive.stat().st_size == best["size_bytes"]
    with tarfile.open(archive) as tar:  # the HF model directory, without training state
        assert sorted(tar.getnames()) == ["model/config.json", "model/model.safetensors"]
