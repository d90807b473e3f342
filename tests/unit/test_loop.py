"""The loop end to end on small synthetic C functions (CPU, a few seconds each).

Covers: files and records written, both classes watched, exact resume, the original collapse
recipe caught by the guard (and the fixed recipe not), non-finite loss, cancellation, the
schedule's step count under gradient accumulation, evaluations every N steps, and the
`rollback` recovery policy (restore `best` with a lower LR) with its resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from streamguard.datasets import write_jsonl
from streamguard.sinks import ListSink
from streamguard.spec import TrainConfig
from streamguard.storage import LocalArtifactStore
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
    # the threshold is the best epoch's validation best-F1 one, saved with the model (and with
    # every checkpoint) and used on test beside 0.5; the model card sits beside the weights
    best_record = next(r for r in sink.epochs if r["epoch"] == result.best_epoch)
    threshold = best_record["best_threshold"]
    assert 0.0 <= threshold <= 1.0 and result.test_metrics["threshold"] == threshold
    assert result.test_metrics["at_threshold"]["threshold"] == threshold
    assert {"pr_auc", "recall_at_fpr10", "brier", "ece"} <= result.test_metrics.keys()
    for folder in (tmp_path / "model", tmp_path / "checkpoints" / "best"):
        meta = json.loads((folder / "streamguard.json").read_text())
        assert meta["threshold"] == threshold and meta["best_epoch"] == result.best_epoch
    card = (tmp_path / "model" / "README.md").read_text()
    assert f"{threshold:.4f}"[:4] in card and "train.jsonl" in card
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
    # The broken schedule keeps the LR near 0 (warmup stepped once per epoch): the model never
    # predicts both classes above the stop ratio (measured: all vulnerable at epoch 1, all safe
    # at 2 and 3), so since issue 9 the guard calls it what it is: not learning, not a collapse
    # of a model that had separated the classes.
    assert result.outcome == StopReason.NOT_LEARNING, result.message
    assert "no evaluation ever predicted both classes" in result.message
    for rec in result.history:
        dist = rec["prediction_distribution"]
        assert (dist["predicted_vulnerable"] < 0.2 * dist["actual_vulnerable"]
                or dist["predicted_safe"] < 0.2 * dist["actual_safe"])
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


@pytest.mark.parametrize("sync_every", [1, 7])
def test_non_finite_loss_stops_without_applying_the_update(splits, tmp_path, monkeypatch,
                                                           sync_every):
    """sync_every 7: the host reads the device only every 7 optimizer steps (as on a GPU);
    the bad steps in between are skipped on the device and the first one is named."""
    import importlib

    loop_module = importlib.import_module("streamguard.training.loop")
    monkeypatch.setattr(loop_module, "host_sync_interval", lambda device, log_every: sync_every)

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
    first_bad = int(result.message.split("optimizer step ")[1].split()[0])
    assert result.global_step - first_bad < sync_every  # read at the next check
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


def test_evaluations_every_n_steps_are_streamed_with_their_step(splits, tmp_path):
    from api.schemas import EvaluationMetrics

    sink = ListSink()
    cfg = TrainConfig(**{**FAST, "epochs": 1, "eval_every_steps": 50})
    result = run(cfg, train_path=splits["train"], val_path=splits["val"], work_dir=tmp_path,
                 sink=sink)
    assert result.outcome == StopReason.COMPLETED, result.message
    mid = [p for kind, p in sink.events if kind == "evaluation"]
    assert [p["step"] for p in mid] == [50, 100]  # step 150 ends the epoch: its record
    assert [r["step"] for r in result.evaluations] == [50, 100, 150]
    assert result.evaluations[-1] is result.history[-1]
    for p in mid:
        assert p["epoch"] == 1 and "loss" not in p and p["val_loss"] > 0
        assert {"warnings", "collapse_streak", "prediction_distribution", "f1"} <= p.keys()
        EvaluationMetrics.from_record(p)  # what the API serves in `evaluation` events
    assert sink.config["eval_every_steps"] == 50 and sink.config["guard_grace_steps"] == 15


def test_a_guard_stop_inside_an_epoch_saves_last_at_that_step(splits, tmp_path):
    # A stop ratio of 100 % puts one class "below" at every evaluation (the predicted counts
    # never match the actual ones exactly), so the model never separates: not_learning after
    # the grace (15 steps) at the 2nd evaluation past it, step 30 of the 150 in epoch 1.
    sink = ListSink()
    cfg = TrainConfig(**{**FAST, "eval_every_steps": 10, "guard_grace_steps": 15,
                         "collapse_warn_ratio": 1.0, "collapse_stop_ratio": 1.0,
                         "collapse_patience": 2})
    result = run(cfg, train_path=splits["train"], val_path=splits["val"], work_dir=tmp_path,
                 sink=sink)
    assert result.outcome == StopReason.NOT_LEARNING, result.message
    assert result.global_step == 30 and result.epochs_completed == 0 and sink.epochs == []
    assert [p["collapse_streak"] for k, p in sink.events if k == "evaluation"] == [0, 1, 2]
    grace_warning = next(p for k, p in sink.events if k == "warning")
    assert grace_warning["step"] == 10 and "not_separating_yet" in grace_warning["message"]
    state = torch.load(tmp_path / "checkpoints" / "last" / "training_state.pt",
                       weights_only=True)
    assert state["global_step"] == 30 and state["batches_done_in_epoch"] == 30
    assert state["epoch"] == 0 and not (tmp_path / "checkpoints" / "best").exists()


# Measured (seed 42, 1,200 synthetic rows, eval every 50 steps, one torch thread): with the LR
# warming up to 4e-3 over 300 of 600 steps the model separates the classes in epoch 1 (it passes
# the guard: the best checkpoint), then flips to one class as the LR nears its peak (step 300);
# `rollback` recovered at half and a quarter of the LR on the machine of that run
# (docs/guard.md shows it). The trajectory is chaotic near the collapse: on an AVX-512 AMD EPYC
# the same recipe and thread count rolled back at steps 300 and 400 and collapsed again 50 steps
# after the second (1e-3 at the best epoch 2 was still too high), and with two threads the
# collapse comes at step 350 or 500. So the rollback here cuts the LR to a quarter, with three
# rollbacks allowed: measured there, one rollback (to epoch 1 with one thread, epoch 2 with two)
# then both classes to the end (F1 0.72-0.88). One thread, and assertions that hold for both.
ROLLBACK_RECIPE = {**FAST, "lr": 4e-3, "epochs": 4, "warmup_ratio": 0.5,
                   "max_warmup_ratio": 1.0, "eval_every_steps": 50}
ROLLBACK_ON = {"on_collapse": "rollback", "rollback_lr_factor": 0.25, "max_rollbacks": 3}


def both_above(record, ratio=0.20):
    dist = record["prediction_distribution"]
    return (dist["predicted_vulnerable"] >= ratio * dist["actual_vulnerable"]
            and dist["predicted_safe"] >= ratio * dist["actual_safe"])


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rolled_back(splits, tmp_path_factory, one_thread):
    sink = ListSink()
    cfg = TrainConfig(**ROLLBACK_RECIPE, **ROLLBACK_ON)
    folder = tmp_path_factory.mktemp("rollback")
    sink.store = RecordingStore(folder / "store")  # type: ignore[attr-defined]
    result = run(cfg, train_path=splits["train"], val_path=splits["val"], work_dir=folder,
                 sink=sink, store=sink.store, store_prefix="p/")  # type: ignore[attr-defined]
    return result, sink


class RecordingStore(LocalArtifactStore):
    """Remembers every key written, to check that no published folder is written twice."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written: list[str] = []

    def put_file(self, local_path: str | Path, key: str) -> None:
        self.written.append(key)
        super().put_file(local_path, key)


def test_lr_too_high_after_warmup_collapses_and_rollback_recovers(splits, rolled_back,
                                                                    one_thread, tmp_path):
    stopped = run(TrainConfig(**ROLLBACK_RECIPE), train_path=splits["train"],
                  val_path=splits["val"], work_dir=tmp_path)
    assert stopped.outcome == StopReason.COLLAPSED, stopped.message
    assert "it had predicted both classes before" in stopped.message
    assert any(both_above(r) for r in stopped.evaluations[:-1])
    assert stopped.best_epoch is not None and stopped.rollbacks == []

    result, sink = rolled_back
    assert result.outcome == StopReason.COMPLETED, result.message
    assert 1 <= len(result.rollbacks) <= 3 and result.global_step == 600
    first = result.rollbacks[0]  # the same run as `stopped` up to its collapse
    assert (first["step"], first["to_epoch"], first["to_step"]) == \
        (stopped.global_step, stopped.best_epoch, 150 * stopped.best_epoch)
    assert first["reason"] == stopped.message and first["max_rollbacks"] == 3
    assert [r["lr_factor"] for r in result.rollbacks] == \
        [0.25, 0.25 ** 2, 0.25 ** 3][:len(result.rollbacks)]
    assert [p for kind, p in sink.events if kind == "rollback"] == result.rollbacks
    # epochs run again after rollback n publish into `epoch-NNNN-rn` folders: no published
    # file is ever written twice
    versioned = [k for k in sink.store.written if "/checkpoints/epoch-" in k]
    assert len(versioned) == len(set(versioned)), sorted(versioned)
    assert any(k.endswith("-r1.model.tar.gz") for k in versioned), versioned
    assert both_above(result.history[-1])  # both classes predicted at the end
    # epochs run again after a rollback are logged again under their own numbers
    assert {r["epoch"] for r in sink.epochs} == {1, 2, 3, 4} and len(sink.epochs) > 4
    # the LR after the rollback is the schedule's, times the factor (warmup continues)
    again = min(r["step"] for r in sink.steps if r["step"] > first["to_step"])
    lrs = [r["lr"] for r in sink.steps if r["step"] == again]
    assert len(lrs) >= 2 and lrs[1] == pytest.approx(0.25 * lrs[0])


class StopAfterRollback(Callback):
    """Cancels at the first epoch end after the sink saw a rollback."""

    def __init__(self, sink: ListSink) -> None:
        self.sink = sink

    def on_epoch_end(self, epoch, record):
        if any(kind == "rollback" for kind, _ in self.sink.events):
            return Decision(True, StopReason.CANCELLED, "interrupted for the test")
        return None


def test_resume_after_a_rollback_keeps_the_lr_factor_and_the_count(splits, rolled_back,
                                                                   one_thread, tmp_path):
    straight, _ = rolled_back
    cfg = TrainConfig(**ROLLBACK_RECIPE, **ROLLBACK_ON)
    seen = ListSink()
    first = run(cfg, train_path=splits["train"], val_path=splits["val"], work_dir=tmp_path,
                sink=seen, callbacks=[StopAfterRollback(seen)])
    assert first.outcome == StopReason.CANCELLED and first.rollbacks == straight.rollbacks[:1]
    state = torch.load(tmp_path / "checkpoints" / "last" / "training_state.pt",
                       weights_only=True)
    assert state["rollback"] == {"lr_factor": 0.25, "log": straight.rollbacks[:1]}
    sink = ListSink()
    resumed = run(cfg, train_path=splits["train"], val_path=splits["val"], work_dir=tmp_path,
                  sink=sink)
    assert sink.config["rollback_lr_factor"] == 0.25 and sink.config["rollbacks"] == 1
    assert resumed.outcome == StopReason.COMPLETED and resumed.rollbacks == straight.rollbacks
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]
