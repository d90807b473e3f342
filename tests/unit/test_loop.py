"""The loop end to end on small synthetic C functions (CPU, a few seconds each).

Covers: files and records written, both classes watched, exact resume, the original collapse
recipe caught by the guard (and the fixed recipe not), non-finite loss, cancellation, and the
schedule's step count under gradient accumulation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from streamguard.datasets import write_jsonl
from streamguard.sinks import ListSink
from streamguard.spec import TrainConfig
from streamguard.synth import synth_examples
from streamguard.training import StopReason, run
from streamguard.training.callbacks import Callback
from streamguard.training.guards import Decision

# A from-scratch model needs ~100+ optimizer steps before its first evaluation, or it still
# predicts one class and the guard (rightly) stops the run: 1,200 rows at batch 8 = 150 steps.
FAST = {"model": "tiny", "max_seq_len": 96, "tokenizer_vocab_size": 600, "batch_size": 8,
        "lr": 1e-3, "epochs": 2, "early_stopping_patience": 0}


def write_splits(folder: Path, *, n_train=1200, n_val=100, vulnerable_fraction=0.46,
                 seed=0) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, (name, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_val))):
        rows = synth_examples(n, seed=seed + i, vulnerable_fraction=vulnerable_fraction,
                              id_prefix=name)
        write_jsonl(rows, folder / f"{name}.jsonl")
        paths[name] = folder / f"{name}.jsonl"
    return paths


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_splits(tmp_path_factory.mktemp("synth"))


def test_run_writes_checkpoints_records_and_model(splits, tmp_path):
    sink = ListSink()
    cfg = TrainConfig(**FAST)
    result = run(cfg, train_path=splits["train"], val_path=splits["val"],
                 test_path=splits["test"], work_dir=tmp_path, sink=sink)
    assert result.outcome == StopReason.COMPLETED, result.message
    assert [r["epoch"] for r in sink.epochs] == [1, 2]
    for rec in sink.epochs:
        dist = rec["prediction_distribution"]
        assert dist["predicted_vulnerable"] > 0 and dist["predicted_safe"] > 0
        assert dist["actual_vulnerable"] + dist["actual_safe"] == 100
        assert {"train_loss", "val_loss", "accuracy", "precision", "recall", "f1", "mcc",
                "roc_auc", "lr", "confusion_matrix"} <= rec.keys()
    assert sink.config["class_weights"] == pytest.approx([1200 / (2 * 648), 1200 / (2 * 552)],
                                                         abs=1e-4)
    assert result.best_epoch is not None and result.test_metrics is not None
    assert sink.outcome == ("completed", "completed 2 epoch(s)")
    # step metrics: 150 optimizer steps an epoch, default ~20 points an epoch -> every 8 steps,
    # plus each epoch's last step; the same indices on any resumed run
    expected = [k for k in range(1, 301) if k % 8 == 0 or k % 150 == 0]
    assert [r["step"] for r in sink.steps] == expected
    assert [r["epoch"] for r in sink.steps] == [1 if k <= 150 else 2 for k in expected]
    assert sink.steps[-1]["epoch_progress"] == 1.0 and sink.steps[-1]["total_steps"] == 300
    assert sink.steps[-1]["lr"] == pytest.approx(sink.epochs[-1]["lr"])
    assert all(r["train_loss"] > 0 and r["grad_norm"] > 0 and r["samples_per_s"] > 0
               for r in sink.steps)
    for name in ("best", "last"):
        assert (tmp_path / "checkpoints" / name / "training_state.pt").is_file()
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert model.config.num_labels == 2 and tok("int f(void){}")["input_ids"][0] == 0


class StopAfterEpoch(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch, record):
        if epoch == self.epoch:
            return Decision(True, StopReason.CANCELLED, "interrupted for the test")
        return None


def test_resume_gives_identical_weights(splits, tmp_path):
    cfg = TrainConfig(**{**FAST, "epochs": 2})
    straight = run(cfg, train_path=splits["train"], val_path=splits["val"],
                   work_dir=tmp_path / "a")
    first = run(cfg, train_path=splits["train"], val_path=splits["val"],
                work_dir=tmp_path / "b", callbacks=[StopAfterEpoch(1)])
    assert first.outcome == StopReason.CANCELLED and first.epochs_completed == 1
    sink = ListSink()
    resumed = run(cfg, train_path=splits["train"], val_path=splits["val"],
                  work_dir=tmp_path / "b", sink=sink)
    assert sink.config["start_epoch"] == 1 and [r["epoch"] for r in sink.epochs] == [2]
    assert sink.config["start_step"] == 150 and sink.steps[0]["step"] == 152  # 19 x 8
    assert resumed.global_step == straight.global_step
    a = load_file(tmp_path / "a" / "checkpoints" / "last" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoints" / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.history[-1]["val_loss"] == resumed.history[-1]["val_loss"]


class PerEpochScheduler(Callback):
    """The original bug: a per-step warmup scheduler stepped once per epoch."""

    def __init__(self) -> None:
        self.inner = None

    def factory(self, optimizer, plan):
        from streamguard.training.schedule import build_scheduler
        self.inner = build_scheduler(optimizer, plan)
        return self

    def step(self):  # called by the loop after every optimizer step: ignored, as in the bug
        pass

    def get_last_lr(self):
        return self.inner.get_last_lr()

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def on_epoch_end(self, epoch, record):
        self.inner.step()
        return None


def test_regression_devign_collapse_recipe_is_caught_and_fix_is_not(tmp_path):
    # Imbalanced data (20 % vulnerable), batch 24 with the LR tuned for batch 16.
    paths = write_splits(tmp_path / "data", n_train=2400, n_val=100, vulnerable_fraction=0.2)
    broken_sched = PerEpochScheduler()
    broken = TrainConfig(**{**FAST, "batch_size": 24, "lr": 1e-3, "epochs": 3,
                            "class_weighting": "none", "lr_scaling": "none"})
    result = run(broken, train_path=paths["train"], val_path=paths["val"],
                 work_dir=tmp_path / "broken", callbacks=[broken_sched],
                 scheduler_factory=broken_sched.factory)
    assert result.outcome == StopReason.COLLAPSED, result.message
    assert "predicts one class only" in result.message
    fixed = TrainConfig(**{**FAST, "batch_size": 24, "lr": 1e-3, "epochs": 3})
    sink = ListSink()
    result = run(fixed, train_path=paths["train"], val_path=paths["val"],
                 work_dir=tmp_path / "fixed", sink=sink)
    assert result.outcome in (StopReason.COMPLETED, StopReason.EARLY_STOPPED), result.message
    assert sink.config["lr"] == pytest.approx(1e-3 * (24 / 16) ** 0.5)
    assert len(sink.epochs) == 3
    for rec in sink.epochs:  # both classes predicted, none under the 20 % stop line
        dist = rec["prediction_distribution"]
        assert dist["predicted_vulnerable"] >= 0.2 * dist["actual_vulnerable"]
        assert dist["predicted_safe"] >= 0.2 * dist["actual_safe"]


def test_non_finite_loss_stops_without_applying_the_update(splits, tmp_path, monkeypatch):
    import importlib

    run_module = importlib.import_module("streamguard.training.run")
    calls = {"n": 0}

    def poison_after(module, inputs, output):  # NaN logits from the 161st forward pass on
        calls["n"] += 1
        return output * float("nan") if calls["n"] > 160 else output

    original = run_module.train

    def train_with_hook(config, *, model, **kw):
        model.classifier.register_forward_hook(poison_after)
        return original(config, model=model, **kw)

    monkeypatch.setattr(run_module, "train", train_with_hook)
    result = run(TrainConfig(**FAST), train_path=splits["train"], val_path=splits["val"],
                 work_dir=tmp_path)
    assert result.outcome == StopReason.NON_FINITE_LOSS
    assert "update not applied" in result.message and "epoch 2" in result.message
    weights = load_file(tmp_path / "checkpoints" / "last" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_cancel_stops_after_current_step(splits, tmp_path):
    polls = {"n": 0}

    def should_cancel():
        polls["n"] += 1
        return polls["n"] >= 1

    sink = ListSink()
    result = run(TrainConfig(**FAST), train_path=splits["train"], val_path=splits["val"],
                 work_dir=tmp_path, should_cancel=should_cancel, sink=sink)
    assert result.outcome == StopReason.CANCELLED and result.global_step == 10
    assert sink.outcome[0] == "cancelled" and sink.epochs == []


def test_accumulation_counts_optimizer_steps_and_schedule_ends_at_zero(splits, tmp_path):
    # 1,200 rows / batch 8 = 150 micro-batches; accumulation 7 -> ceil(150/7) = 22 steps, the
    # last one over 150 - 21 * 7 = 3 micro-batches. (Whether 22 steps learn anything does not
    # matter here: the record is written before the guard decides.)
    sink = ListSink()
    cfg = TrainConfig(**{**FAST, "accumulation_steps": 7, "epochs": 1})
    result = run(cfg, train_path=splits["train"], val_path=splits["val"], work_dir=tmp_path,
                 sink=sink)
    assert sink.config["total_steps"] == 22 and result.global_step == 22
    assert [r["step"] for r in sink.steps] == list(range(2, 23, 2))  # ceil(22 / 20) = 2
    assert sink.config["effective_batch"] == 56
    assert sink.epochs[-1]["lr"] == 0.0
