"""Checkpoints saved off the training thread (streamguard/training/async_save.py).

The background save writes the same bytes as the synchronous one, from a snapshot that training
on never changes; the commit protocol (files, manifest, then pointer) still holds; sink events
are emitted on the training thread only; a failed background write raises there; and a run that
ends (preempted, or by an exception) has no save left in flight.
"""

from __future__ import annotations

import copy
import filecmp
import importlib
import json
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from streamguard.manifest import read_pointer
from streamguard.sinks import ListSink
from streamguard.spec import TrainConfig
from streamguard.storage import LocalArtifactStore
from streamguard.training import StopReason, loop, run
from streamguard.training import checkpoint as ckpt
from streamguard.training.async_save import BackgroundSaver, snapshot
from streamguard.training.callbacks import Callback
from tests.unit.test_checkpoint import tiny_model
from tests.unit.test_loop import FAST, write_splits

# Small runs: 240 rows at batch 8 = 30 optimizer steps an epoch. Too few for the tiny model to
# separate the classes, so the guard's grace covers the whole run (it only warns), and the
# outcome is not what these tests are about.
CFG = {**FAST, "guard_grace_steps": 1_000_000}
STEPS_PER_EPOCH = 30
MAIN = threading.get_ident()
# the module, not the `run` function that streamguard.training exports under the same name
run_module = importlib.import_module("streamguard.training.run")


# --- the snapshot and the saver on their own ------------------------------------------------

def trained_tiny() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(input_ids=torch.tensor([[0, 5, 6, 2]])).logits.sum().backward()
    opt.step()  # populates exp_avg / exp_avg_sq / step
    return model, opt


def train_state(opt: torch.optim.Optimizer, loss_sum: torch.Tensor) -> dict[str, Any]:
    return {"optimizer": opt.state_dict(), "rng": ckpt.rng_state(), "epoch": 1,
            "global_step": 7, "epoch_loss_sum": loss_sum, "callbacks": {"g": {"log": [1, 2]}}}


def save_sync(folder: Path, model: torch.nn.Module, state: dict[str, Any]) -> Path:
    """What the loop did before: write straight from the live objects."""
    return ckpt.save_checkpoint(folder, model=model, tokenizer=None, state=state,
                                meta={"epoch": 1}, train_config_json="{}")


def save_in_background(saver: BackgroundSaver, folder: Path, snap: dict[str, Any],
                       model: torch.nn.Module, gate: threading.Event | None = None) -> None:
    def job() -> list[tuple[str, dict[str, Any]]]:
        if gate is not None:
            assert gate.wait(30)
        ckpt.save_checkpoint(folder, model=model, tokenizer=None, state=snap["state"],
                             meta={"epoch": 1}, train_config_json="{}",
                             model_state=snap["model"])
        return [("checkpoint", {"thread": threading.get_ident()})]

    saver.submit(job, emit=lambda kind, payload: None)


def same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        assert filecmp.cmp(a / name, b / name, shallow=False), name


def test_snapshot_copies_everything_and_keeps_aliases():
    weight = torch.arange(12.0).reshape(3, 4)
    tree = OrderedDict(w=weight, tied=weight, view=weight[1:, 1:], n=[torch.ones(2), {"k": 3}],
                       pair=(torch.zeros(1), "x"))
    snap = snapshot(tree)
    assert type(snap) is OrderedDict and list(snap) == list(tree)
    weight.add_(100)  # training on: in place, as an optimizer step is
    tree["n"][0].add_(1)
    tree["n"][1]["k"] = 4
    assert torch.equal(snap["w"], torch.arange(12.0).reshape(3, 4))
    assert torch.equal(snap["view"], torch.tensor([[5.0, 6, 7], [9, 10, 11]]))
    assert torch.equal(snap["n"][0], torch.ones(2)) and snap["n"][1] == {"k": 3}
    assert snap["pair"][1] == "x" and isinstance(snap["pair"], tuple)
    # aliases stay aliases (tied weights, views): one copied storage, same offsets
    assert snap["tied"].untyped_storage().data_ptr() == snap["w"].untyped_storage().data_ptr()
    assert snap["view"].untyped_storage().data_ptr() == snap["w"].untyped_storage().data_ptr()
    assert snap["view"].storage_offset() == 5


def test_background_save_writes_the_bytes_the_synchronous_save_wrote(tmp_path):
    model, opt = trained_tiny()
    state = train_state(opt, torch.tensor(3.5, dtype=torch.float64))
    save_sync(tmp_path / "sync", model, state)
    with BackgroundSaver() as saver:
        save_in_background(saver, tmp_path / "async", snapshot(
            {"model": model.state_dict(), "state": state}), model)
    same_files(tmp_path / "sync", tmp_path / "async")
    # still a Hugging Face model dir and a weights_only training state
    from transformers import RobertaForSequenceClassification
    RobertaForSequenceClassification.from_pretrained(tmp_path / "async")
    torch.load(tmp_path / "async" / ckpt.STATE_FILE, weights_only=True)


def test_training_on_after_the_snapshot_never_changes_the_files(tmp_path):
    model, opt = trained_tiny()
    loss_sum = torch.tensor(3.5, dtype=torch.float64)  # a CPU tally: .cpu() would not copy it
    state = train_state(opt, loss_sum)
    save_sync(tmp_path / "before", model, copy.deepcopy(state))
    gate = threading.Event()
    with BackgroundSaver() as saver:
        save_in_background(saver, tmp_path / "async", snapshot(
            {"model": model.state_dict(), "state": state}), model, gate)
        # the training thread goes on while the job waits: weights, moments, step, tallies
        model(input_ids=torch.tensor([[0, 7, 8, 2]])).logits.sum().backward()
        opt.step()
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        loss_sum += 1.0
        state["callbacks"]["g"]["log"].append(3)
        gate.set()
    same_files(tmp_path / "before", tmp_path / "async")


def test_a_failed_job_raises_its_own_error_on_the_caller():
    error = OSError(28, "No space left on device")

    def job() -> list[tuple[str, dict[str, Any]]]:
        raise error

    saver = BackgroundSaver()
    saver.submit(job, emit=lambda kind, payload: None)
    deadline = time.monotonic() + 30
    with pytest.raises(OSError) as raised:
        while time.monotonic() < deadline:  # poll, as the loop does after each step
            saver.poll()
            time.sleep(0.01)
    assert raised.value is error
    saver.close()  # raised once, not again


def test_one_save_in_flight_and_events_emitted_by_the_caller():
    emitted: list[tuple[int, int]] = []
    gate = threading.Event()

    def job(i: int) -> list[tuple[str, dict[str, Any]]]:
        if i == 0:
            assert gate.wait(30)
        return [("checkpoint", {"i": i})]

    def emit(kind: str, payload: dict[str, Any]) -> None:
        emitted.append((payload["i"], threading.get_ident()))

    with BackgroundSaver() as saver:
        saver.submit(lambda: job(0), emit=emit)
        saver.poll()
        assert saver.busy and emitted == []  # still held
        threading.Timer(0.2, gate.set).start()
        saver.submit(lambda: job(1), emit=emit)  # waits for the first save, emits it here
        assert emitted == [(0, MAIN)]
    assert emitted == [(0, MAIN), (1, MAIN)] and not saver.busy


# --- the loop: one run with a slow first save ---------------------------------------------

class ThreadRecordingSink(ListSink):
    """A ListSink that also records the thread of every call (sinks are not thread-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def start(self, config):
        self.threads.add(threading.get_ident())
        super().start(config)

    def log_epoch(self, record):
        self.threads.add(threading.get_ident())
        super().log_epoch(record)

    def log_step(self, record):
        self.threads.add(threading.get_ident())
        super().log_step(record)

    def event(self, kind, payload):
        self.threads.add(threading.get_ident())
        super().event(kind, payload)

    def finish(self, outcome, message):
        self.threads.add(threading.get_ident())
        super().finish(outcome, message)


class OrderRecordingStore(LocalArtifactStore):
    """Remembers every write in order (pointers with their payload)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.writes: list[tuple[str, dict[str, Any] | None]] = []

    def put_file(self, local_path, key):
        super().put_file(local_path, key)
        self.writes.append((key, None))

    def put_bytes(self, data, key):
        super().put_bytes(data, key)
        self.writes.append((key, json.loads(data) if key.endswith(".json") else None))


class Watch(Callback):
    """Keeps a copy of the live weights and optimizer state at the end of epoch 1 (the moment
    of the snapshot), and opens `gate` three optimizer steps into epoch 2."""

    def __init__(self, live: dict[str, Any], gate: threading.Event) -> None:
        self.live, self.gate, self.at_epoch_end = live, gate, {}

    def on_step_end(self, step):
        if step == STEPS_PER_EPOCH + 3:
            self.gate.set()

    def on_epoch_end(self, epoch, record):
        if epoch == 1:
            self.at_epoch_end = {
                "model": {k: v.detach().clone() for k, v in self.live["model"].state_dict()
                          .items()},
                "optimizer": copy.deepcopy(self.live["optimizer"].state_dict())}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> dict[str, Path]:
    return write_splits(tmp_path_factory.mktemp("synth"), n_train=240, n_val=40)


@pytest.fixture(scope="module")
def slow_first_save(splits, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A 2-epoch run whose epoch-1 save is held until epoch 2 has taken 3 optimizer steps (so
    a synchronous save would deadlock: the hold would time out and fail the run)."""
    folder = tmp_path_factory.mktemp("slow")
    live: dict[str, Any] = {}
    gate = threading.Event()
    written: dict[int, Path] = {}
    save_threads: list[int] = []
    real_save, real_build, real_opt = (ckpt.save_checkpoint, run_module.build_model,
                                       loop.make_optimizer)

    def held_save(target, **kwargs):
        save_threads.append(threading.get_ident())
        step = int(kwargs["state"]["global_step"])
        if step == STEPS_PER_EPOCH:
            assert gate.wait(120), "epoch 2 never ran while epoch 1's save was held"
        out = real_save(target, **kwargs)
        written[step] = shutil.copytree(out, folder / "written" / str(step))
        return out

    def build(*args, **kwargs):
        live["model"], tokenizer = real_build(*args, **kwargs)
        return live["model"], tokenizer

    def make_optimizer(*args, **kwargs):
        live["optimizer"] = real_opt(*args, **kwargs)
        return live["optimizer"]

    sink, store, watch = ThreadRecordingSink(), OrderRecordingStore(folder / "store"), \
        Watch(live, gate)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ckpt, "save_checkpoint", held_save)
        mp.setattr(run_module, "build_model", build)
        mp.setattr(loop, "make_optimizer", make_optimizer)
        result = run(TrainConfig(**CFG), train_path=splits["train"], val_path=splits["val"],
                     test_path=splits["test"], work_dir=folder, sink=sink, store=store,
                     store_prefix="p/", callbacks=[watch])
    assert result.global_step == 2 * STEPS_PER_EPOCH, result.message
    yield {"folder": folder, "sink": sink, "store": store, "watch": watch, "written": written,
           "save_threads": save_threads, "result": result}


def test_epoch_one_is_saved_as_it_was_while_epoch_two_trains(slow_first_save):
    run_ = slow_first_save
    at_end = run_["watch"].at_epoch_end
    saved = run_["written"][STEPS_PER_EPOCH]  # held until 3 steps of epoch 2 had run
    weights = load_file(saved / "model.safetensors")
    assert weights.keys() == at_end["model"].keys()
    for key, value in at_end["model"].items():
        assert torch.equal(weights[key], value), key
    state = torch.load(saved / ckpt.STATE_FILE, weights_only=True)
    assert state["global_step"] == STEPS_PER_EPOCH and state["epoch"] == 1
    for index, moments in at_end["optimizer"]["state"].items():
        for name, value in moments.items():
            assert torch.equal(state["optimizer"]["state"][index][name], value), (index, name)
    # and training really went on: the final weights are not epoch 1's
    final = load_file(run_["folder"] / "checkpoints" / "last" / "model.safetensors")
    assert any(not torch.equal(final[k], v) for k, v in at_end["model"].items())


def test_saves_run_off_the_training_thread_and_the_sink_only_on_it(slow_first_save):
    run_ = slow_first_save
    assert run_["save_threads"] and MAIN not in run_["save_threads"]
    assert run_["sink"].threads == {MAIN}
    events = [(p["name"], p["epoch"]) for k, p in run_["sink"].events if k == "checkpoint"]
    assert ("last", 1) in events and ("last", 2) in events


def test_files_then_manifest_then_pointer(slow_first_save):
    writes = slow_first_save["store"].writes
    run_keys = [key for key, _ in writes]
    pointers = [(i, payload) for i, (key, payload) in enumerate(writes)
                if key in ("p/checkpoints/last.json", "p/checkpoints/best.json")]
    assert {payload["epoch"] for _, payload in pointers} == {1, 2}
    for i, payload in pointers:
        prefix = payload["key_prefix"]
        manifest = run_keys.index(f"{prefix}/manifest.json")
        files = [j for j, key in enumerate(run_keys) if key.startswith(prefix + "/")
                 and key != f"{prefix}/manifest.json"]
        assert files and max(files) < manifest < i
        assert run_keys.index(payload["archive_key"]) < i
    store = slow_first_save["store"]
    assert read_pointer(store, "p/checkpoints/last.json")["epoch"] == 2


# --- the loop: errors, preemption and exceptions with a save in flight -------------------

def test_a_failed_background_write_raises_on_the_training_thread(splits, tmp_path,
                                                                  monkeypatch):
    threads: list[int] = []

    def full_disk(target, **kwargs):
        threads.append(threading.get_ident())
        raise OSError(28, "No space left on device (for the test)")

    monkeypatch.setattr(ckpt, "save_checkpoint", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        run(TrainConfig(**CFG), train_path=splits["train"], val_path=splits["val"],
            work_dir=tmp_path, store=LocalArtifactStore(tmp_path / "store"), store_prefix="p/")
    assert threads and MAIN not in threads
    assert read_pointer(LocalArtifactStore(tmp_path / "store"), "p/checkpoints/last.json") \
        is None  # nothing committed


class PreemptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step, self.now = step, 0

    def on_step_end(self, step):
        self.now = step

    def __call__(self) -> bool:
        return self.now == self.step


def test_a_preempted_run_returns_with_last_written_and_published(splits, tmp_path,
                                                                 monkeypatch):
    real_save = ckpt.save_checkpoint

    def slow_save(target, **kwargs):
        time.sleep(0.5)  # a slow disk: the run must still wait for it before returning
        return real_save(target, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", slow_save)
    store, sink, preempt = LocalArtifactStore(tmp_path / "store"), ListSink(), PreemptAt(35)
    result = run(TrainConfig(**CFG), train_path=splits["train"], val_path=splits["val"],
                 work_dir=tmp_path, sink=sink, store=store, store_prefix="p/",
                 callbacks=[preempt], should_preempt=preempt)
    assert result.outcome == StopReason.PREEMPTED and result.global_step == 35
    pointer = read_pointer(store, "p/checkpoints/last.json")
    assert pointer["key_prefix"] == "p/checkpoints/epoch-0002-step-000035"
    assert [(p["name"], p.get("step")) for k, p in sink.events if k == "checkpoint"][-1] == \
        ("last", 35)
    state = ckpt.load_state(tmp_path / "checkpoints" / "last")
    assert state["global_step"] == 35 and state["batches_done_in_epoch"] == 5
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


class RaiseAt(Callback):
    """A bug on the training thread right after epoch 1's save started (the save is held until
    then, so it is certainly in flight when the error is raised)."""

    def __init__(self, step: int, gate: threading.Event) -> None:
        self.step, self.gate = step, gate

    def on_step_end(self, step):
        if step == self.step:
            self.gate.set()
            raise RuntimeError("a bug in a callback")


def test_an_exception_leaves_no_save_in_flight(splits, tmp_path, monkeypatch):
    real_save, gate = ckpt.save_checkpoint, threading.Event()
    finished: list[int] = []

    def held_save(target, **kwargs):
        assert gate.wait(60)
        time.sleep(0.2)
        out = real_save(target, **kwargs)
        finished.append(int(kwargs["state"]["global_step"]))
        return out

    monkeypatch.setattr(ckpt, "save_checkpoint", held_save)
    store, sink = LocalArtifactStore(tmp_path / "store"), ListSink()
    with pytest.raises(RuntimeError, match="a bug in a callback"):
        run(TrainConfig(**CFG), train_path=splits["train"], val_path=splits["val"],
            work_dir=tmp_path, sink=sink, store=store, store_prefix="p/",
            callbacks=[RaiseAt(STEPS_PER_EPOCH + 1, gate)])
    # the save in flight finished before run() raised: written, published, event recorded
    assert finished == [STEPS_PER_EPOCH]
    assert read_pointer(store, "p/checkpoints/last.json")["epoch"] == 1
    assert ("last", 1) in [(p["name"], p["epoch"]) for k, p in sink.events if k == "checkpoint"]
    assert ckpt.load_state(tmp_path / "checkpoints" / "last")["global_step"] == STEPS_PER_EPOCH


def test_later_snapshots_copy_into_the_first_ones_memory_after_the_save_in_flight():
    """BackgroundSaver.snapshot reuses the previous snapshot's host memory (no fresh pages for
    every save), only once that save is done, and never shares memory with the live tensors."""
    model, opt = trained_tiny()
    gate = threading.Event()
    with BackgroundSaver() as saver:
        first = saver.snapshot({"model": model.state_dict()})
        before = {k: v.clone() for k, v in first["model"].items()}
        saver.submit(lambda: [("gate", {"waited": gate.wait(10)})], emit=lambda *_: None)
        for p in model.parameters():
            p.data.add_(1.0)  # training on while the first save is in flight
        threading.Timer(0.3, gate.set).start()
        second = saver.snapshot({"model": model.state_dict()})  # waits for that save first
        assert gate.is_set()
    live = model.state_dict()
    for name, tensor in second["model"].items():
        assert torch.equal(tensor, live[name])
        assert tensor.untyped_storage().data_ptr() != live[name].untyped_storage().data_ptr()
        # the same host memory as the first snapshot: now holding the new values
        assert tensor.untyped_storage().data_ptr() == first["model"][name].untyped_storage()\
            .data_ptr()
    changed = [n for n, t in before.items() if t.is_floating_point() and not torch.equal(
        second["model"][n], t)]
    assert changed, "the second snapshot should hold the updated weights"


def test_snapshot_buffers_let_go_of_sources_that_are_gone():
    from streamguard.training.async_save import SnapshotBuffers

    buffers = SnapshotBuffers()
    a, b = torch.ones(1000), torch.ones(10)
    snapshot({"a": a, "b": b}, buffers)
    assert buffers.nbytes == 4 * 1010
    snapshot({"b": b}, buffers)  # `a` gone from the tree: its buffer is freed
    assert buffers.nbytes == 4 * 10


def test_a_prepared_saver_takes_its_first_snapshot_into_memory_mapped_beforehand():
    """`BackgroundSaver.prepare` maps the snapshot memory of the model's and optimizer's
    storages on the background thread; the first snapshot then copies into exactly that memory
    (no fresh pages on the training thread), holds the live values and shares nothing with
    them."""
    model, opt = trained_tiny()
    tree = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    with BackgroundSaver() as saver:
        saver.prepare(tree)
        assert saver.busy  # a background job, like a save in flight
        saver.wait()  # the preparation is done: its memory is mapped before any snapshot
        reserved = {base.untyped_storage().data_ptr() for base in saver._buffers._kept.values()}
        assert reserved
        first = saver.snapshot(tree)
    copies = [first["model"][name] for name in tree["model"]] + [
        value for state in first["optimizer"]["state"].values() for value in state.values()
        if isinstance(value, torch.Tensor) and value.numel() > 1]
    assert copies and all(t.untyped_storage().data_ptr() in reserved for t in copies)
    for name, tensor in tree["model"].items():
        assert torch.equal(first["model"][name], tensor)
        assert first["model"][name].untyped_storage().data_ptr() != \
            tensor.untyped_storage().data_ptr()


def test_storage_keys_count_each_storage_once():
    from streamguard.training.async_save import storage_keys

    base = torch.zeros(10)
    keys = storage_keys({"a": base, "view": base[2:5], "list": [base, torch.ones(3)], "n": 1})
    assert sorted(size for _, _, size in keys) == [12, 40]


def test_the_loop_prepares_the_snapshot_memory_once_after_the_first_optimizer_step(
        splits, tmp_path, monkeypatch):
    from streamguard.training import async_save

    calls: list[tuple[int, int]] = []

    class Recording(BackgroundSaver):
        def prepare(self, tree: Any) -> None:
            optimizer_state = tree["optimizer"]["state"]
            calls.append((len(tree["model"]), len(optimizer_state)))
            super().prepare(tree)

    monkeypatch.setattr(async_save, "BackgroundSaver", Recording)  # the saver train() owns
    result = run(TrainConfig(**CFG), train_path=splits["train"], val_path=splits["val"],
                 test_path=splits["test"], work_dir=tmp_path, sink=ListSink())
    assert result.global_step == 2 * STEPS_PER_EPOCH, result.message
    assert len(calls) == 1
    model_tensors, optimizer_params = calls[0]
    assert model_tensors > 0 and optimizer_params > 0  # AdamW's moments existed already
