"""Preemption at a step boundary and exact mid-epoch resume (CPU, tiny model, synthetic data).

A run told to preempt saves and publishes `last` at that optimizer step and ends PREEMPTED
without evaluating; running it again finishes with the same weights, optimizer state, epoch
records and test metrics as a run that was never interrupted, however often it was stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from streamguard.manifest import read_pointer
from streamguard.sinks import FanOutSink, JsonlSink, ListSink
from streamguard.spec import TrainConfig
from streamguard.storage import LocalArtifactStore
from streamguard.training import RunResult, StopReason, run
from streamguard.training.callbacks import Callback
from tests.unit.test_loop import write_splits

# 800 rows at batch 4 = 200 optimizer steps an epoch: enough that the tiny model predicts both
# classes at its first evaluation (fewer steps and the collapse guard rightly stops the run).
CFG = {"model": "tiny", "max_seq_len": 64, "tokenizer_vocab_size": 600, "batch_size": 4,
       "lr": 1e-3, "epochs": 2, "early_stopping_patience": 0}
STEPS_PER_EPOCH = 200
#: the only fields allowed to differ
TIMING = ("epoch_time_s", "train_samples_per_s", "samples_per_s")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise equality needs the same reduction order in every run
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_splits(tmp_path_factory.mktemp("synth"), n_train=800, n_val=100)


class PreemptAt(Callback):
    """A `should_preempt` that says yes once: after optimizer step `step`, or when asked at the
    end of epoch `after_epoch`. (As a callback it sees where the loop is; it keeps no state.)"""

    def __init__(self, *, step: int | None = None, after_epoch: int | None = None) -> None:
        self.target = ("step", step) if step is not None else ("epoch", after_epoch)
        self.where: tuple[str, int | None] = ("start", None)
        self.fired = False

    def on_step_end(self, step):
        self.where = ("step", step)

    def on_epoch_end(self, epoch, record):
        self.where = ("epoch", epoch)

    def __call__(self) -> bool:
        hit = not self.fired and self.where == self.target
        self.fired |= hit
        return hit


def train_in(folder: Path, splits, *, store: LocalArtifactStore, preempt: PreemptAt | None = None,
             config: dict | None = None) -> tuple[RunResult, ListSink]:
    sink = ListSink()
    result = run(TrainConfig(**(config or CFG)), train_path=splits["train"],
                 val_path=splits["val"], test_path=splits["test"], work_dir=folder,
                 sink=FanOutSink([JsonlSink(folder / "metrics.jsonl"), sink]), store=store,
                 store_prefix="p/", callbacks=[preempt] if preempt else [],
                 should_preempt=preempt)
    return result, sink


@pytest.fixture(scope="module")
def straight(splits, tmp_path_factory) -> tuple[Path, RunResult]:
    folder = tmp_path_factory.mktemp("straight")
    result, _ = train_in(folder, splits, store=LocalArtifactStore(folder / "store"))
    assert result.outcome == StopReason.COMPLETED, result.message
    assert result.global_step == 2 * STEPS_PER_EPOCH
    return folder, result


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_state(a: Path, b: Path) -> None:
    """Model weights and every optimizer/scheduler/scaler tensor of `last`, bitwise."""
    wa, wb = (load_file(f / "checkpoints" / "last" / "model.safetensors") for f in (a, b))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key
    sa, sb = (torch.load(f / "checkpoints" / "last" / "training_state.pt", weights_only=True)
              for f in (a, b))
    for part in ("optimizer", "scheduler", "scaler"):
        assert_equal_nested(sa[part], sb[part], part)
    assert sa["global_step"] == sb["global_step"] and sa["epoch"] == sb["epoch"]


def assert_equal_nested(x, y, where: str) -> None:
    if isinstance(x, torch.Tensor):
        assert isinstance(y, torch.Tensor) and torch.equal(x, y), where
    elif isinstance(x, dict):
        assert x.keys() == y.keys(), where
        for k in x:
            assert_equal_nested(x[k], y[k], f"{where}.{k}")
    elif isinstance(x, list | tuple):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            assert_equal_nested(u, v, f"{where}[{i}]")
    else:
        assert x == y, where


def versions(store: LocalArtifactStore) -> set[str]:
    return {o.key.split("/")[2] for o in store.list("p/checkpoints/") if o.key.count("/") >= 3}


def test_preempted_mid_epoch_2_resumes_to_the_uninterrupted_result(splits, straight, tmp_path):
    reference, expected = straight
    store = LocalArtifactStore(tmp_path / "store")
    step = STEPS_PER_EPOCH + 37
    first, sink = train_in(tmp_path, splits, store=store, preempt=PreemptAt(step=step))

    assert first.outcome == StopReason.PREEMPTED
    assert first.message == ("preempted at optimizer step 237 (epoch 2, batch 37 of 200); "
                             "resume continues from there")
    assert sink.outcome == ("preempted", first.message)
    assert first.global_step == step and first.epochs_completed == 1
    assert [r["epoch"] for r in sink.epochs] == [1]  # no evaluation at the preemption
    assert first.test_metrics is None and not (tmp_path / "model").exists()
    last = tmp_path / "checkpoints" / "last"
    state = torch.load(last / "training_state.pt", weights_only=True)  # plain state only
    assert (state["epoch"], state["global_step"], state["batches_done_in_epoch"]) == (1, 237, 37)
    assert state["epoch_samples"] == 37 * 4 and state["epoch_loss_sum"].dtype == torch.float64
    meta = json.loads((last / "meta.json").read_text())
    assert (meta["epoch"], meta["batches_done_in_epoch"], meta["preempted"]) == (2, 37, True)
    assert json.loads((tmp_path / "checkpoints" / "best" / "meta.json").read_text())["epoch"] == 1
    pointer = read_pointer(store, "p/checkpoints/last.json")
    assert pointer["key_prefix"] == "p/checkpoints/epoch-0002-step-000237"
    assert (pointer["epoch"], pointer["step"]) == (2, 237)
    best = read_pointer(store, "p/checkpoints/best.json")
    assert best["key_prefix"] == "p/checkpoints/epoch-0001"
    assert [e["name"] for k, e in sink.events if k == "checkpoint"][-1] == "last"

    second, sink = train_in(tmp_path, splits, store=store)
    assert second.outcome == StopReason.COMPLETED, second.message
    assert sink.config["start_epoch"] == 1 and [r["epoch"] for r in sink.epochs] == [2]
    assert second.global_step == expected.global_step
    assert_same_state(reference, tmp_path)
    assert without_timing(jsonl(tmp_path / "metrics.jsonl")) == \
        without_timing(jsonl(reference / "metrics.jsonl"))
    # step metrics too: the same indices and values as the uninterrupted run (the loss window
    # open at the preemption is saved with the checkpoint)
    assert without_timing(jsonl(tmp_path / "steps.jsonl")) == \
        without_timing(jsonl(reference / "steps.jsonl"))
    assert second.test_metrics == expected.test_metrics and second.best_epoch == expected.best_epoch
    # the mid-epoch folder was deleted once no pointer named it: same versions as the reference
    assert versions(store) == versions(LocalArtifactStore(reference / "store"))


def test_preempted_again_and_again_then_resumed_elsewhere_from_the_store(splits, straight,
                                                                         tmp_path):
    """Mid-epoch 1, then at the end of epoch 1 (the epoch checkpoint is the resume point), then
    after the very last step (position 200 of 200), then a fresh folder fetches `last`."""
    reference, expected = straight
    store = LocalArtifactStore(tmp_path / "store")
    records: list[dict] = []
    stops = [PreemptAt(step=50), PreemptAt(after_epoch=1), PreemptAt(step=2 * STEPS_PER_EPOCH)]
    for preempt in stops:
        result, sink = train_in(tmp_path / "here", splits, store=store, preempt=preempt)
        assert result.outcome == StopReason.PREEMPTED and preempt.fired, result.message
        records += sink.epochs
    assert result.message.startswith("preempted at optimizer step 400 (epoch 2, batch 200 of")
    assert read_pointer(store, "p/checkpoints/last.json")["key_prefix"].endswith(
        "epoch-0002-step-000400")

    final, sink = train_in(tmp_path / "elsewhere", splits, store=store)
    assert final.outcome == StopReason.COMPLETED, final.message
    records += sink.epochs
    assert final.global_step == expected.global_step
    assert_same_state(reference, tmp_path / "elsewhere")
    assert without_timing(records) == without_timing(jsonl(reference / "metrics.jsonl"))


def straight_and_resumed(tmp_path: Path, splits: dict[str, Path], cfg: dict[str, Any], *,
                         step: int, check: Callable[[RunResult], None],
                         ) -> tuple[RunResult, RunResult]:
    """`cfg` trained straight through in tmp_path/a, and in tmp_path/b preempted at optimizer
    `step` (`check` looks at that first run) then resumed: the two end in the same state."""
    straight, _ = train_in(tmp_path / "a", splits, store=LocalArtifactStore(tmp_path / "sa"),
                           config=cfg)
    store = LocalArtifactStore(tmp_path / "sb")
    first, _ = train_in(tmp_path / "b", splits, store=store, preempt=PreemptAt(step=step),
                        config=cfg)
    check(first)
    second, _ = train_in(tmp_path / "b", splits, store=store, config=cfg)
    assert second.outcome == straight.outcome and second.global_step == straight.global_step
    assert_same_state(tmp_path / "a", tmp_path / "b")
    return straight, second


def test_accumulation_preempts_only_at_optimizer_steps_and_resumes_exactly(splits, tmp_path):
    # 800 / 4 = 200 micro-batches in groups of 3: 66 full ones and a last one of 2. One epoch:
    # the outcome (completed or collapsed) does not matter, only that both runs agree.
    cfg = {**CFG, "accumulation_steps": 3, "epochs": 1}

    def at_preemption(first: RunResult) -> None:
        assert first.outcome == StopReason.PREEMPTED and "batch 60 of 200" in first.message
        state = torch.load(tmp_path / "b" / "checkpoints" / "last" / "training_state.pt",
                           weights_only=True)
        assert state["batches_done_in_epoch"] == 60 and state["global_step"] == 20

    straight, second = straight_and_resumed(tmp_path, splits, cfg, step=20, check=at_preemption)
    assert second.global_step == straight.global_step == 67
    assert without_timing(jsonl(tmp_path / "b" / "metrics.jsonl")) == \
        without_timing(jsonl(tmp_path / "a" / "metrics.jsonl"))


def test_cli_sigterm_preempts_with_exit_6_and_the_same_command_resumes(splits, tmp_path):
    config = {**CFG, "epochs": 1}  # one epoch of 200 steps is enough to pass the guard
    command = [sys.executable, "-m", "streamguard.cli", "train", "--train", str(splits["train"]),
               "--val", str(splits["val"]), "--output-dir", str(tmp_path / "run"),
               "--no-progress", *[f"--{k.replace('_', '-')}={v}" for k, v in config.items()]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # the banner is logged just before the first step
        if line.startswith("model tiny:"):
            proc.send_signal(signal.SIGTERM)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 6, out + err
    assert "run the same command again to resume" in err
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["outcome"] == "preempted" and 0 < result["global_step"] < STEPS_PER_EPOCH

    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resuming epoch 1 at batch {result['global_step']} of 200" in again.stdout
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["outcome"] == "completed" and result["global_step"] == STEPS_PER_EPOCH
    assert [r["epoch"] for r in jsonl(tmp_path / "run" / "metrics.jsonl")] == [1]


def test_length_bucketed_batches_resume_exactly(splits, tmp_path):
    """Stratified length buckets are a pure function of (seed, epoch) too: a run preempted
    mid-epoch resumes into the very batches the uninterrupted run saw."""
    cfg = {**CFG, "group_by_length": True, "epochs": 1}

    def at_preemption(first: RunResult) -> None:
        assert first.outcome == StopReason.PREEMPTED and "batch 77 of 200" in first.message

    straight_and_resumed(tmp_path, splits, cfg, step=77, check=at_preemption)
    assert without_timing(jsonl(tmp_path / "b" / "steps.jsonl")) == \
        without_timing(jsonl(tmp_path / "a" / "steps.jsonl"))
