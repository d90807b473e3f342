"""Checkpoints as plain state: safetensors weights plus tensors-and-primitives training state.

Layout of a checkpoint folder (itself a Hugging Face model directory, so `from_pretrained` loads
it):
    config.json, model.safetensors, tokenizer files   the model
    training_state.pt   optimizer, scheduler, scaler, RNG, counters, guard states (weights_only);
                        `epoch` is the 0-based epoch a resumed run starts in, and a preempted
                        run's mid-epoch checkpoint adds its position in it
                        (`batches_done_in_epoch` > 0) and that epoch's running sums
    train_config.json   the TrainConfig
    meta.json           epoch, step, best metric, class weights, that epoch's metrics (mid-epoch:
                        the epoch in progress, batches done, no metrics)

Saving `last` runs off the training thread (async_save.py, docs/ARCHITECTURE.md
"Checkpoints off the critical path"): the loop snapshots the tensors, and one background thread
calls `save_checkpoint` on the copy, then the card, the `best` copy and the publisher.

Nothing here pickles an object: `torch.load(..., weights_only=True)` is the only loader, and a
file that needs more than that is refused (the original run's best checkpoint did not even load).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from streamguard.errors import CheckpointError

STATE_FILE = "training_state.pt"
META_FILE = "meta.json"
CONFIG_FILE = "train_config.json"


def to_native(value: Any) -> Any:
    """Recursively turn numpy/torch scalars and arrays into Python numbers and lists."""
    if isinstance(value, Mapping):
        return {str(k): to_native(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_native(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 and value.dim() == 0 else value.tolist()
    if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar or array
        return value.tolist() if getattr(value, "ndim", 0) else value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in checkpoint metadata; "
                    "use numbers, strings, lists or dicts")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _replace_dir(tmp: Path, target: Path) -> None:
    """Swap a fully written folder into place; a crash leaves either the old or the new one."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)


def save_checkpoint(target: Path, *, model: Any, tokenizer: Any, state: Mapping[str, Any],
                    meta: Mapping[str, Any], train_config_json: str,
                    model_state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a checkpoint folder atomically. `state` holds tensors/primitives only.

    `model_state` (a snapshot of `model.state_dict()`, see async_save.py) is written instead of
    the live weights: the background writer passes its copy, so `model` only lends its config.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        # config.json + model.safetensors; save_pretrained pops from the dict it is given
        model.save_pretrained(tmp, state_dict=None if model_state is None else dict(model_state))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        torch.save(dict(state), tmp / STATE_FILE)
        (tmp / META_FILE).write_text(json.dumps(to_native(meta), indent=2, sort_keys=True))
        (tmp / CONFIG_FILE).write_text(train_config_json)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_state(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load training_state.pt with weights_only=True; anything pickled is refused."""
    path = folder / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"no {STATE_FILE} in checkpoint {folder}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing checkpoint {path}: it holds pickled objects, not plain state "
            f"(weights_only load failed: {str(exc).splitlines()[0]})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds {type(state).__name__}, expected a dict")
    return state


def load_meta(folder: Path) -> dict[str, Any]:
    path = folder / META_FILE
    if not path.is_file():
        raise CheckpointError(f"no {META_FILE} in checkpoint {folder}")
    return dict(json.loads(path.read_text()))


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Atomically replace `dst` with a copy of `src` (best <- last)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    shutil.rmtree(tmp)
    shutil.copytree(src, tmp)
    _replace_dir(tmp, dst)


def export_model_dir(src: Path, dst: Path) -> Path:
    """A plain Hugging Face model directory (config, safetensors, tokenizer) from a checkpoint."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}-", dir=dst.parent))
    for item in src.iterdir():
        if item.name != STATE_FILE and item.is_file():
            shutil.copy2(item, tmp / item.name)
    _replace_dir(tmp, dst)
    return dst
