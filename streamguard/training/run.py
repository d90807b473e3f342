"""One training run from files: validate data, build or resume the model, train, evaluate.

This is what both `streamguard train` and the Celery worker call; they differ only in the sink,
the artifact store, the token cache and the cancel and preempt callables they pass in.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from streamguard.errors import CheckpointError, InvalidTrainConfig
from streamguard.manifest import fetch_dir, read_pointer
from streamguard.sinks import MetricSink, NullSink
from streamguard.spec import REPORTING_FIELDS, MixedPrecision, TrainConfig
from streamguard.storage import ArtifactStore
from streamguard.training import checkpoint as ckpt
from streamguard.training.callbacks import Callback, CancelOnRequest
from streamguard.training.data import make_loader
from streamguard.training.loop import RunResult, SchedulerFactory, train
from streamguard.training.model import build_model, load_model_config, load_tokenizer
from streamguard.training.preparation import PrepReport, prepare_data
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


class _BannerNote:
    """Passes every call to `sink`, adding `data_preparation` to the run banner (`start`)."""

    def __init__(self, sink: MetricSink, report: PrepReport) -> None:
        self.sink, self.report = sink, report

    def start(self, config: Mapping[str, Any]) -> None:
        self.sink.start({**config, "data_preparation": self.report.as_dict()})

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        self.sink.log_epoch(record)

    def log_step(self, record: Mapping[str, Any]) -> None:
        self.sink.log_step(record)

    def event(self, kind: str, payload: Mapping[str, Any]) -> None:
        self.sink.event(kind, payload)

    def finish(self, outcome: str, message: str) -> None:
        self.sink.finish(outcome, message)


def run(config: TrainConfig, *, train_path: str | Path, val_path: str | Path,
        test_path: str | Path | None = None, work_dir: str | Path,
        sink: MetricSink | None = None, store: ArtifactStore | None = None,
        store_prefix: str = "", should_cancel: Callable[[], bool] | None = None,
        resume: bool = True, device: str | None = None, progress: bool = False,
        callbacks: Sequence[Callback] = (),
        scheduler_factory: SchedulerFactory = build_scheduler,
        base_model: Path | None = None,
        should_preempt: Callable[[], bool] | None = None,
        created_by: str = "streamguard train",
        cache: ArtifactStore | None = None, cache_namespace: str = "") -> RunResult:
    """Validate, build, train. Raises DataError/InvalidTrainConfig before any training step.

    `base_model` is a local model folder to start from instead of `config.model` (the worker
    passes an earlier job's checkpoint for `job:<id>` models); a resume checkpoint wins.
    `should_preempt` is read after every optimizer step (a flag a SIGTERM handler sets): when it
    returns True the run saves and publishes `last` at that step and ends PREEMPTED; running
    again with the same `work_dir` (or store prefix) continues from that exact step.
    `cache` keeps prepared data (the scratch tokenizer, token ids) for the next run with the
    same files (`training.preparation`); `cache_namespace` is hashed into its keys (the worker
    passes the tenant id, so tenants never share entries). None: prepare everything afresh.
    """
    work_dir = Path(work_dir)
    dev = pick_device(config, device)
    resume_from = find_resume_checkpoint(work_dir, store, store_prefix) if resume else None
    resume_state = None
    if resume_from is not None:
        # Where the run reports (trackers) may change between attempts; what it trains not.
        stored = {k: v for k, v in json.loads((resume_from / ckpt.CONFIG_FILE).read_text())
                  .items() if k not in REPORTING_FIELDS}
        current = {k: v for k, v in config.model_dump(mode="json").items()
                   if k not in REPORTING_FIELDS}
        if stored != current:
            changed = sorted(k for k in stored.keys() | current.keys()
                             if stored.get(k) != current.get(k))
            raise CheckpointError(
                f"{resume_from} was written with a different config (fields {changed}); "
                "use a fresh output directory or disable resume")
        resume_state = ckpt.load_state(resume_from, map_location=dev)
    # The tokenizer comes with the weights' source; a scratch model's BPE is trained (or taken
    # from the cache) by data preparation. The position-limit check is config.json only, so a
    # too-long max_seq_len fails before the data is tokenized.
    source: str | Path | None = resume_from or base_model
    if source is None and not config.is_scratch_model:
        source = config.model
    if source is not None:
        load_model_config(source, config)
    paths: dict[str, str | Path] = {"train": train_path, "validation": val_path}
    if test_path is not None:
        paths["test"] = test_path
    prep = prepare_data(config, paths, cache=cache, namespace=cache_namespace,
                        tokenizer=load_tokenizer(source) if source is not None else None)

    seed_everything(config.seed)
    model, tokenizer = build_model(config, checkpoint=resume_from or base_model,
                                   tokenizer=prep.tokenizer)

    def loader(split: str, *, shuffle: bool, batch: int):  # type: ignore[no-untyped-def]
        # Packing is for the training batches; evaluation stays padded (and length-sorted).
        # Under torch.compile widths are rounded up to a few buckets: a handful of shapes.
        train_split = split == "train"
        return make_loader(prep.splits[split], batch, pad_id=int(tokenizer.pad_token_id),
                           shuffle=shuffle, group_by_length=config.group_by_length,
                           seed=config.seed, pin_memory=dev.type == "cuda",
                           packed_row_len=config.max_seq_len
                           if config.packing and train_split else None,
                           pad_multiple=max(8, config.max_seq_len // 8)
                           if config.torch_compile and train_split else 1)

    eval_batch = config.effective_eval_batch_size
    all_callbacks = list(callbacks)
    if should_cancel is not None:
        all_callbacks.append(CancelOnRequest(should_cancel))
    return train(
        config, model=model, tokenizer=tokenizer,
        train_loader=loader("train", shuffle=True, batch=config.batch_size),
        val_loader=loader("validation", shuffle=False, batch=eval_batch),
        test_loader=loader("test", shuffle=False, batch=eval_batch) if "test" in paths else None,
        label_counts=prep.label_counts, work_dir=work_dir, device=dev,
        sink=_BannerNote(sink or NullSink(), prep.report), store=store,
        store_prefix=store_prefix, callbacks=all_callbacks, resume_state=resume_state,
        scheduler_factory=scheduler_factory, progress=progress, should_preempt=should_preempt,
        # for the model card: which data made the model (file name, sha256, rows, labels)
        data=prep.data, created_by=created_by)
