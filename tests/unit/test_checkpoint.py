"""Checkpoints hold plain state only: round-trips, refusal of pickles, native metric values."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

from streamguard.errors import CheckpointError
from streamguard.training import checkpoint as ckpt


def tiny_model():
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=40,
                        num_labels=2)
    return RobertaForSequenceClassification(cfg)


def test_to_native_converts_numpy_and_tensors():
    meta = {"f1": np.float32(0.5), "mcc": torch.tensor(0.25), "cm": np.array([[1, 2], [3, 4]]),
            "n": np.int64(7), "nested": [torch.tensor([1.5, 2.5]), {"x": np.bool_(True)}]}
    out = ckpt.to_native(meta)
    assert out == {"f1": 0.5, "mcc": 0.25, "cm": [[1, 2], [3, 4]], "n": 7,
                   "nested": [[1.5, 2.5], {"x": True}]}
    assert type(out["f1"]) is float and type(out["n"]) is int
    with pytest.raises(TypeError, match="cannot store object"):
        ckpt.to_native({"bad": object()})


def test_round_trip_weights_only(tmp_path: Path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[0, 5, 6, 2]])).logits.sum().backward()
    opt.step()
    state = {"optimizer": opt.state_dict(), "rng": ckpt.rng_state(), "epoch": 3,
             "global_step": 12, "callbacks": {"g": {"consecutive": 1}}}
    meta = {"metrics": {"f1": np.float64(0.61), "auc": torch.tensor(0.7)}, "epoch": 3}
    folder = ckpt.save_checkpoint(tmp_path / "last", model=model, tokenizer=None, state=state,
                                  meta=meta, train_config_json='{"lr": 0.001}')
    assert {p.name for p in folder.iterdir()} >= {"model.safetensors", "config.json",
                                                   "training_state.pt", "meta.json"}
    loaded = ckpt.load_state(folder)  # weights_only=True inside
    assert loaded["epoch"] == 3 and loaded["callbacks"]["g"]["consecutive"] == 1
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"],
                       opt.state_dict()["state"][0]["exp_avg"])
    # weights_only=True works on the raw file too, and metrics are native JSON numbers
    torch.load(folder / "training_state.pt", weights_only=True)
    assert json.loads((folder / "meta.json").read_text())["metrics"] == {"f1": 0.61,
                                                                       "auc": pytest.approx(0.7)}
    again = RobertaForSequenceClassification.from_pretrained(folder)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


class Evil:
    def __init__(self):
        self.x = 1


def test_checkpoint_with_pickled_object_is_refused(tmp_path: Path):
    folder = tmp_path / "bad"
    folder.mkdir()
    torch.save({"optimizer": {}, "trainer": Evil()}, folder / "training_state.pt")
    with pytest.raises(CheckpointError, match="pickled objects"):
        ckpt.load_state(folder)
    # and a plain pickle file fails the same way
    (folder / "training_state.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="refusing checkpoint"):
        ckpt.load_state(folder)


def test_replace_is_atomic_and_copy_best(tmp_path: Path):
    model = tiny_model()
    for epoch in (1, 2):
        ckpt.save_checkpoint(tmp_path / "last", model=model, tokenizer=None,
                             state={"epoch": epoch}, meta={"epoch": epoch},
                             train_config_json="{}")
    ckpt.copy_checkpoint(tmp_path / "last", tmp_path / "best")
    assert ckpt.load_meta(tmp_path / "best")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last"]  # no temp folders
    exported = ckpt.export_model_dir(tmp_path / "best", tmp_path / "model")
    assert not (exported / "training_state.pt").exists()
    assert (exported / "model.safetensors").exists()
