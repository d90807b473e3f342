"""One training run from files: validate data, build or resume the model, train, evaluate.

This is what both `streamguard train` and the Celery worker call; they differ only in the sink,
the artifact store and the cancel and preempt callables they pass in.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from streamguard.datasets import check_split, label_counts, read_examples
from streamguard.errors import CheckpointError, InvalidTrainConfig
from streamguard.manifest import fetch_dir, read_pointer
from streamguard.sinks import MetricSink
from streamguard.spec import MixedPrecision, TrainConfig
from streamguard.storage import ArtifactStore
from streamguard.training import checkpoint as ckpt
from streamguard.training.callbacks import Callback, CancelOnRequest
from streamguard.training.data import make_loader, tokenize
from streamguard.training.loop import RunResult, SchedulerFactory, train
from streamguard.training.model import build_model
from streamguard.training.model_card import describe_split
from streamguard.training.schedule import build_scheduler

log = logging.getLogger("streamguard.train")


def pick_device(config: TrainConfig, device: str | None = None) -> torch.device:
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if config.mixed_precision == MixedPrecision.FP16 and dev.type != "cuda":
        raise InvalidTrainConfig([{"field": "mixed_precision",
                                   "message": "fp16 needs a CUDA device; allowed on CPU: "
                                              "none, bf16"}])
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def find_resume_checkpoint(work_dir: Path, store: ArtifactStore | None,
                           store_prefix: str) -> Path | None:
    """The local `last` checkpoint, fetched from the store first when only the store has it."""
    last = work_dir / "checkpoints" / "last"
    if not last.is_dir() and store is not None:
        pointer = read_pointer(store, f"{store_prefix}checkpoints/last.json")
        if pointer is not None:
            log.info("fetching checkpoint %s from the store", pointer["key_prefix"])
            fetch_dir(store, pointer["key_prefix"], last)
    return last if last.is_dir() else None


def run(config: TrainConfig, *, train_path: str | Path, val_path: str | Path,
        test_path: str | Path | None = None, work_dir: str | Path,
        sink: MetricSink | None = None, store: ArtifactStore | None = None,
        store_prefix: str = "", should_cancel: Callable[[], bool] | None = None,
        resume: bool = True, device: str | None = None, progress: bool = False,
        callbacks: Sequence[Callback] = (),
        scheduler_factory: SchedulerFactory = build_scheduler,
        base_model: Path | None = None,
        should_preempt: Callable[[], bool] | None = None,
        created_by: str = "streamguard train") -> RunResult:
    """Validate, build, train. Raises DataError/InvalidTrainConfig before any training step.

    `base_model` is a local model folder to start from instead of `config.model` (the worker
    passes an earlier job's checkpoint for `job:<id>` models); a resume checkpoint wins.
    `should_preempt` is read after every optimizer step (a flag a SIGTERM handler sets): when it
    returns True the run saves and publishes `last` at that step and ends PREEMPTED; running
    again with the same `work_dir` (or store prefix) continues from that exact step.
    """
    work_dir = Path(work_dir)
    dev = pick_device(config, device)
    train_ex, val_ex = read_examples(train_path), read_examples(val_path)
    test_ex = read_examples(test_path) if test_path is not None else None
    check_split(train_ex, str(train_path))
    check_split(val_ex, str(val_path))
    counts = label_counts(train_ex)

    seed_everything(config.seed)
    resume_from = find_resume_checkpoint(work_dir, store, store_prefix) if resume else None
    resume_state = None
    if resume_from is not None:
        stored = json.loads((resume_from / ckpt.CONFIG_FILE).read_text())
        if stored != config.model_dump(mode="json"):
            changed = sorted(k for k in stored if stored.get(k) != config.model_dump(
                mode="json").get(k))
            raise CheckpointError(
                f"{resume_from} was written with a different config (fields {changed}); "
                "use a fresh output directory or disable resume")
        resume_state = ckpt.load_state(resume_from, map_location=dev)
    model, tokenizer = build_model(config, [e.func for e in train_ex],
                                   checkpoint=resume_from or base_model)

    def loader(examples: Sequence, *, shuffle: bool, batch: int):  # type: ignore[no-untyped-def]
        split = tokenize(tokenizer, [e.func for e in examples], [e.target for e in examples],
                         config.max_seq_len)
        return make_loader(split, batch, pad_id=int(tokenizer.pad_token_id), shuffle=shuffle,
                           group_by_length=config.group_by_length, seed=config.seed,
                           pin_memory=dev.type == "cuda")

    eval_batch = config.effective_eval_batch_size
    # for the model card: which data made the model (file name, sha256, rows, labels)
    data = {"train": describe_split(train_path, [e.target for e in train_ex]),
            "validation": describe_split(val_path, [e.target for e in val_ex]),
            **({"test": describe_split(test_path, [e.target for e in test_ex])}
               if test_ex and test_path is not None else {})}
    all_callbacks = list(callbacks)
    if should_cancel is not None:
        all_callbacks.append(CancelOnRequest(should_cancel))
    return train(
        config, model=model, tokenizer=tokenizer,
        train_loader=loader(train_ex, shuffle=True, batch=config.batch_size),
        val_loader=loader(val_ex, shuffle=False, batch=eval_batch),
        test_loader=loader(test_ex, shuffle=False, batch=eval_batch) if test_ex else None,
        label_counts=counts, work_dir=work_dir, device=dev, sink=sink, store=store,
        store_prefix=store_prefix, callbacks=all_callbacks, resume_state=resume_state,
        scheduler_factory=scheduler_factory, progress=progress, should_preempt=should_preempt,
        data=data, created_by=created_by)
