"""The collapse-guarded training loop. Reads top to bottom: derive, loop, evaluate, guard, save.

Every rule that the collapsed Devign run broke is enforced here: class-balanced weighted CE, LR
scaled for the batch, a warmup schedule stepped after *every optimizer step*, gradient clipping
(after unscaling under fp16), per-class prediction counts each epoch, collapse stop rules, and
checkpoints of plain state only. The loop sees one sink and one (optional) artifact store.

Preemption (the worker's SIGTERM, `docker stop`) is read after every optimizer step: the loop
saves and publishes `last` at that exact step, with the epoch's position and running sums, and a
resumed run finishes the epoch as if nothing happened (same batches, same record, same weights).

The guard (docs/guard.md) sees every evaluation: each epoch's end, and every `eval_every_steps`
optimizer steps inside an epoch (an `evaluation` event). A guard stop inside an epoch saves and
publishes `last` at that step, as preemption does. Best-checkpoint selection and early stopping
happen at epoch ends only. With `on_collapse: rollback` a collapse restores `best` (weights,
optimizer, scheduler, scaler, RNG, guard states), multiplies the LR by `rollback_lr_factor`
(compounded; kept in every checkpoint, so a resumed run keeps it) and trains on from there; the
epochs run again are logged again under their own numbers.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model
from torch.utils.data import DataLoader

from streamguard.sinks import MetricSink, NullSink
from streamguard.spec import MixedPrecision, OnCollapse, TrainConfig
from streamguard.storage import ArtifactStore
from streamguard.training import checkpoint as ckpt
from streamguard.training.async_save import BackgroundSaver, Event, owns_saver
from streamguard.training.callbacks import Callback
from streamguard.training.data import EpochBatchSampler
from streamguard.training.forward import batch_logits
from streamguard.training.guards import CollapseGuard, Decision, EarlyStopping, StopReason
from streamguard.training.loss import class_weights, make_loss
from streamguard.training.metrics import (
    EvalMetrics,
    at_threshold,
    compute_metrics,
    format_distribution,
)
from streamguard.training.model_card import guard_events, write_model_card
from streamguard.training.publish import CheckpointPublisher
from streamguard.training.schedule import LrPlan, build_scheduler, plan_lr

log = logging.getLogger("streamguard.train")

Batch = dict[str, torch.Tensor]
SchedulerFactory = Callable[[torch.optim.Optimizer, LrPlan], Any]


@dataclass
class RunResult:
    outcome: StopReason
    message: str
    best_epoch: int | None = None
    best_metric: float | None = None
    epochs_completed: int = 0
    global_step: int = 0
    test_metrics: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    train_samples_per_s: float = 0.0
    # every rollback of the run (RollbackPayload's fields), resumed attempts' included
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    # every evaluation of this attempt in order: mid-epoch ones and the epoch records
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "message": self.message,
                "best_epoch": self.best_epoch, "best_metric": self.best_metric,
                "epochs_completed": self.epochs_completed, "global_step": self.global_step,
                "test_metrics": self.test_metrics,
                "train_samples_per_s": self.train_samples_per_s, "rollbacks": self.rollbacks}


def amp_dtype(mode: MixedPrecision) -> torch.dtype | None:
    return {MixedPrecision.NONE: None, MixedPrecision.BF16: torch.bfloat16,
            MixedPrecision.FP16: torch.float16}[mode]


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and LayerNorm weights (the BERT recipe).

    Fused (one kernel for every parameter) where PyTorch has the kernel for the parameters'
    device: faster, and it can skip an update on a device-side flag (`_step_unless`), which is
    what keeps the training step free of host synchronisation.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except RuntimeError:  # no fused kernel for this device or dtype
        return torch.optim.AdamW(groups, lr=lr)


def _step_unless(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 skip: torch.Tensor) -> None:
    """Apply the optimizer step unless `skip` (a bool on the device) is set.

    A fused optimizer reads the flag inside its kernel (the `found_inf` contract GradScaler
    uses), so nothing waits for the device; other optimizers read it on the host. Under fp16
    the scaler skips by itself: a non-finite loss makes the gradients non-finite too.
    """
    if scaler.is_enabled():
        scaler.step(optimizer)
    elif getattr(optimizer, "_step_supports_amp_scaling", False):
        optimizer.found_inf = skip.float()  # type: ignore[attr-defined]
        optimizer.grad_scale = None  # type: ignore[attr-defined]
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf, optimizer.grad_scale  # type: ignore[attr-defined]
    elif not bool(skip):
        optimizer.step()


def host_sync_interval(device: torch.device, log_every: int) -> int:
    """Optimizer steps between the host's reads of the device (the non-finite check).

    On a CPU a read costs nothing, so every step is checked; on an accelerator the step stays
    asynchronous and the check runs with the step metrics (and before every evaluation,
    checkpoint or stop). Skipped updates are never applied either way.
    """
    return 1 if device.type == "cpu" else log_every


@torch.inference_mode()
def evaluate(model: torch.nn.Module, loader: DataLoader[Batch], criterion: torch.nn.Module,
             device: torch.device, autocast_ctx: Any) -> EvalMetrics:
    """Gather logits over the split, then compute every metric once (exact weighted loss)."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        with autocast_ctx:
            logits = batch_logits(model, batch, device)
        all_logits.append(logits.float().cpu())
        all_labels.append(batch["labels"])
    logits_t, labels_t = torch.cat(all_logits), torch.cat(all_labels)
    loss = float(criterion.cpu()(logits_t, labels_t))
    criterion.to(device)
    return compute_metrics(logits_t, labels_t, loss)


@dataclass
class EpochTally:
    """The epoch in progress: its position and running sums (train_loss is the epoch's mean).

    A mid-epoch checkpoint saves it, so the resumed epoch ends with the uninterrupted record.
    """

    loss_sum: torch.Tensor  # float64 on the device: summed per example, no sync per step
    samples: int = 0
    batches_done: int = 0  # micro-batches of this epoch behind the last optimizer step
    time_s: float = 0.0
    # optimizer-step losses since the last step metrics (their mean is the next point's loss)
    window_loss: float = 0.0
    window_steps: int = 0

    @classmethod
    def resume(cls, device: torch.device, state: Mapping[str, Any] | None) -> EpochTally:
        """A fresh tally, or the one a mid-epoch checkpoint saved (position > 0)."""
        if state is None or not int(state.get("batches_done_in_epoch", 0)):
            return cls(torch.zeros((), device=device, dtype=torch.float64))
        return cls(state["epoch_loss_sum"].to(device, torch.float64),
                   int(state["epoch_samples"]), int(state["batches_done_in_epoch"]),
                   float(state["epoch_time_s"]), float(state.get("step_window_loss", 0.0)),
                   int(state.get("step_window_steps", 0)))

    def state_dict(self) -> dict[str, Any]:
        return {"batches_done_in_epoch": self.batches_done, "epoch_samples": self.samples,
                "epoch_loss_sum": self.loss_sum.detach().cpu(), "epoch_time_s": self.time_s,
                "step_window_loss": self.window_loss, "step_window_steps": self.window_steps}


class UnreadSteps:
    """What the device knows and the host has not read yet: the step losses since the last
    read and the first optimizer step whose update was skipped as non-finite (0: none)."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device, dtype=torch.float32)
        self.first_bad = torch.zeros((), device=device, dtype=torch.long)

    def record(self, step: int, step_loss: torch.Tensor, bad: torch.Tensor) -> None:
        self.loss += step_loss
        self.first_bad = torch.where(bad & (self.first_bad == 0), step, self.first_bad)

    def read(self, tally: EpochTally, epoch: int) -> Decision | None:
        """A host sync: fold the losses into the tally's window; a stop if a step was bad."""
        tally.window_loss += float(self.loss.item())
        self.loss.zero_()
        bad_step = int(self.first_bad.item())
        if not bad_step:
            return None
        return Decision(True, StopReason.NON_FINITE_LOSS,
                        f"training loss or gradient norm became non-finite (NaN or inf) at "
                        f"optimizer step {bad_step} (epoch {epoch + 1}); update not applied")


def _epoch_batches(loader: DataLoader[Batch], epoch: int, start_batch: int) -> Iterable[Batch]:
    """The epoch's batches from `start_batch` on, in the order an uninterrupted run sees them.

    EpochBatchSampler orders by (seed, epoch) and skips indices, so skipped batches are never
    loaded; any other loader is read and its first batches dropped.
    """
    sampler = loader.batch_sampler
    if isinstance(sampler, EpochBatchSampler):
        sampler.set_epoch(epoch, start_batch=start_batch)
        return loader
    set_epoch = getattr(sampler, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    return itertools.islice(loader, start_batch, None)


def _first_stop(decisions: Sequence[Decision | None]) -> Decision | None:
    """The most serious stop: non-finite > collapsed > not learning > cancelled > preempted >
    early stopped."""
    order = [StopReason.NON_FINITE_LOSS, StopReason.COLLAPSED, StopReason.NOT_LEARNING,
             StopReason.CANCELLED,
             StopReason.PREEMPTED, StopReason.EARLY_STOPPED]
    stops = [d for d in decisions if d is not None and d.stop]
    return min(stops, key=lambda d: order.index(d.reason)) if stops else None  # type: ignore[arg-type]


def _restore(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any, scaler: torch.amp.GradScaler, stateful: Sequence[Any],
             device: torch.device) -> dict[str, Any]:
    """Load a checkpoint's full training state into the live objects (a rollback to `best`)."""
    state = ckpt.load_state(folder, map_location=device)
    load_model(model, str(folder / "model.safetensors"), device=str(device))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    for obj in stateful:
        if getattr(obj, "state_key", ""):
            obj.load_state_dict(state["callbacks"].get(obj.state_key, {}))
    ckpt.set_rng_state(state["rng"])
    return state


def _scale_lr(optimizer: torch.optim.Optimizer, scheduler: Any, scale: float) -> None:
    """Multiply the LR by `scale` for good: the optimizer's groups now, and the scheduler's
    base LRs, so the rest of the warmup/decay is the same curve scaled (LambdaLR recomputes
    every LR from `base_lrs` at each step)."""
    for group in optimizer.param_groups:
        group["lr"] *= scale
        if "initial_lr" in group:
            group["initial_lr"] *= scale
    if hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = [lr * scale for lr in scheduler.base_lrs]
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


@owns_saver
def train(config: TrainConfig, *, model: torch.nn.Module, tokenizer: Any,
          train_loader: DataLoader[Batch], val_loader: DataLoader[Batch],
          test_loader: DataLoader[Batch] | None = None, label_counts: Sequence[int],
          work_dir: Path, device: torch.device, sink: MetricSink | None = None,
          store: ArtifactStore | None = None, store_prefix: str = "",
          callbacks: Sequence[Callback] = (), resume_state: dict[str, Any] | None = None,
          scheduler_factory: SchedulerFactory = build_scheduler,
          progress: bool = False, should_preempt: Callable[[], bool] | None = None,
          data: Mapping[str, Mapping[str, Any]] | None = None,
          created_by: str = "streamguard", saver: BackgroundSaver | None = None) -> RunResult:
    """Train with the collapse guard; returns the outcome (collapse is an outcome, not an error).

    `data` describes the splits for the exported model's card (`model_card.describe_split`);
    `created_by` names who trained it there.

    `resume_state` is a loaded `training_state.pt` (the model must already hold that
    checkpoint's weights); the run then continues where it records: after an epoch, or inside
    one. `should_preempt` is read after every optimizer step (keep it a flag read); when it
    says yes the run saves `last` at that step and ends PREEMPTED, without evaluating.

    Checkpoints are written and published by `saver`'s background thread (`owns_saver` gives
    each call its own and closes it on the way out); the run waits for them before a rollback
    reads `best`, and before it returns (a PREEMPTED run's `last` is then published).
    """
    sink = sink or NullSink()
    assert saver is not None  # owns_saver passes one
    preempt_flag = should_preempt or (lambda: False)

    prepared = False

    def poll_then_ask() -> bool:
        # Read after every optimizer step, so a finished background save is collected here: a
        # done() check, then its `checkpoint` events on this thread (or its error raised).
        nonlocal prepared
        saver.poll()
        if not prepared and optimizer.state:  # AdamW's moments exist from the first step on
            # the snapshot memory is mapped in the background while training goes on
            saver.prepare({"model": model.state_dict(), "optimizer": optimizer.state_dict()})
            prepared = True
        return preempt_flag()

    should_preempt = poll_then_ask
    ckpt_dir = work_dir / "checkpoints"
    # --- derive every number once, and say them --------------------------------------------
    model.to(device)
    weights = class_weights(label_counts, config.class_weighting.value)
    criterion = make_loss(weights, label_smoothing=config.label_smoothing, device=device)
    effective_batch = config.batch_size * config.accumulation_steps
    plan = plan_lr(base_lr=config.lr, batch_size=effective_batch, base_batch=config.base_batch,
                   rule=config.lr_scaling.value, warmup_ratio=config.warmup_ratio,
                   max_warmup_ratio=config.max_warmup_ratio,
                   batches_per_epoch=len(train_loader),
                   accumulation_steps=config.accumulation_steps, epochs=config.epochs)
    optimizer = make_optimizer(model, plan.lr, config.weight_decay)
    scheduler = scheduler_factory(optimizer, plan)
    dtype = amp_dtype(config.mixed_precision)
    autocast_ctx = (nullcontext() if dtype is None
                    else torch.autocast(device.type, dtype=dtype))
    # fp16 needs loss scaling; bf16 has fp32's exponent range and fp32 needs none. A disabled
    # scaler's scale/unscale_/step/update are no-ops, so every precision runs the same code.
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    forward: Callable[..., torch.Tensor] = batch_logits
    if config.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(  # type: ignore[operator]
            gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.torch_compile:
        forward = torch.compile(batch_logits)
    grace = plan.warmup_steps if config.guard_grace_steps is None else config.guard_grace_steps
    guard = CollapseGuard(config.collapse_warn_ratio, config.collapse_stop_ratio,
                          config.collapse_patience, grace)
    stopper = EarlyStopping(config.selection_metric, config.early_stopping_patience)
    publisher = CheckpointPublisher(store, store_prefix, sink) if store is not None else None
    start_epoch, global_step = 0, 0
    if resume_state is not None:
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        guard.load_state_dict(resume_state["callbacks"][guard.state_key])
        stopper.load_state_dict(resume_state["callbacks"][stopper.state_key])
        for cb in callbacks:
            if cb.state_key:
                cb.load_state_dict(resume_state["callbacks"].get(cb.state_key, {}))
        ckpt.set_rng_state(resume_state["rng"])
        start_epoch, global_step = int(resume_state["epoch"]), int(resume_state["global_step"])
        if publisher is not None:
            publisher.load_state_dict(resume_state["callbacks"].get("publisher", {}))
    # Rollbacks so far and their compounded LR factor (already inside the resumed scheduler).
    rollback_state = (resume_state or {}).get("rollback", {})
    lr_factor = float(rollback_state.get("lr_factor", 1.0))
    rollbacks: list[dict[str, Any]] = list(rollback_state.get("log", []))
    resumed = EpochTally.resume(device, resume_state)  # position > 0: resume inside an epoch
    steps_per_epoch = -(-len(train_loader) // config.accumulation_steps)
    log_every = config.step_interval(steps_per_epoch)
    n_params = sum(p.numel() for p in model.parameters())
    banner = {
        "model": config.model, "parameters": n_params, "device": str(device),
        "train_examples": len(train_loader.dataset),  # type: ignore[arg-type]
        "label_counts": list(label_counts), "class_weights": [round(w, 4) for w in
                                                              weights.tolist()],
        "batch_size": config.batch_size, "accumulation_steps": config.accumulation_steps,
        "effective_batch": effective_batch, "lr": plan.lr, "lr_factor": plan.factor,
        "warmup_ratio": plan.warmup_ratio, "warmup_steps": plan.warmup_steps,
        "total_steps": plan.total_steps, "mixed_precision": config.mixed_precision.value,
        "start_epoch": start_epoch, "start_batch": resumed.batches_done,
        "start_step": global_step, "log_every_steps": log_every,
        "eval_every_steps": config.eval_every_steps, "guard_grace_steps": grace,
        "rollback_lr_factor": lr_factor, "rollbacks": len(rollbacks),
        "config": config.model_dump(mode="json"),
    }
    log.info("model %s: %.2fM parameters on %s", config.model, n_params / 1e6, device)
    log.info("labels safe/vulnerable %s -> class weights %s", list(label_counts),
             [f"{w:.4f}" for w in weights.tolist()])
    log.info(plan.banner(effective_batch, config.base_batch))
    if resumed.batches_done:
        log.info("resuming epoch %d at batch %d of %d (optimizer step %d)", start_epoch + 1,
                 resumed.batches_done, len(train_loader), global_step)
    elif start_epoch:
        log.info("resuming after epoch %d (optimizer step %d)", start_epoch, global_step)
    sink.start(banner)
    for cb in callbacks:
        cb.on_train_start(banner)

    card_data = data or {"train": {"rows": sum(label_counts), "label_counts": list(label_counts)}}

    def save_last(epoch: int, tally: EpochTally | None, *, is_best: bool,
                  meta: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Save `last` after 0-based `epoch`, or inside it at `tally` (a preemption), with its
        card, `best` (if `is_best`), and publish it with `metrics`. Only the snapshot stalls
        this thread; the rest runs on the saver's thread (async_save.py)."""
        saver.wait()  # one save in flight; the publisher's pointers are then up to date
        # (and the snapshot memory that save wrote from may now be reused)
        step = None if tally is None else global_step  # a mid-epoch version is named by step
        after = publisher.state_after(epoch=epoch + 1, is_best=is_best, step=step) \
            if publisher else {}
        state = {
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": ckpt.rng_state(),
            "epoch": epoch + 1 if tally is None else epoch,  # the epoch a resumed run starts in
            "global_step": global_step,
            **(tally.state_dict() if tally is not None else {"batches_done_in_epoch": 0}),
            "rollback": {"lr_factor": lr_factor, "log": rollbacks},
            "callbacks": {guard.state_key: guard.state_dict(),
                          stopper.state_key: stopper.state_dict(),
                          **{cb.state_key: cb.state_dict() for cb in callbacks if cb.state_key},
                          "publisher": after},
        }
        meta = {**meta, "global_step": global_step, "best_metric": stopper.best,
                "best_epoch": stopper.best_epoch, "selection_metric": config.selection_metric,
                "class_weights": weights.tolist(), "label_counts": list(label_counts)}
        # Every tensor copied to CPU, every list and dict too: the steps taken while the
        # background thread writes never change what it writes.
        snap = saver.snapshot({"model": model.state_dict(), "state": state, "meta": meta,
                               "metrics": metrics, "history": history})
        message, config_json = f"checkpoint at optimizer step {global_step}", config.to_json()

        def write() -> list[Event]:
            last = ckpt.save_checkpoint(ckpt_dir / "last", model=model, tokenizer=tokenizer,
                                        state=snap["state"], meta=snap["meta"],
                                        train_config_json=config_json,
                                        model_state=snap["model"])
            # Every checkpoint carries its card and its threshold (this evaluation's best-F1
            # one), so a downloaded `best` (or the inference worker's copy) predicts at its own
            # threshold.
            write_model_card(
                last, config=config, history=snap["history"], outcome="running",
                message=message, best_epoch=snap["meta"].get("epoch"), test_metrics=None,
                threshold=(snap["meta"].get("metrics") or {}).get("best_threshold"),
                data=card_data, created_by=created_by)
            if is_best:
                ckpt.copy_checkpoint(last, ckpt_dir / "best")
            if publisher is None:
                return []
            return [("checkpoint", payload) for payload in publisher.upload(
                last, epoch=epoch + 1, is_best=is_best, step=step, metrics=snap["metrics"])]

        saver.submit(write, emit=sink.event)

    def evaluate_now() -> tuple[EvalMetrics, Decision]:
        """Evaluate on the validation split at this step and ask the guard."""
        val = evaluate(model, val_loader, criterion, device, autocast_ctx)
        return val, guard.evaluate(val, global_step)

    def report_warnings(epoch: int, val: EvalMetrics, decision: Decision) -> None:
        for text in decision.warnings:
            log.warning("  WARNING collapse risk: %s", text)
            sink.event("warning", {"epoch": epoch + 1, "step": global_step, "message": text,
                                   "prediction_distribution": val.pred_distribution})

    def roll_back(decision: Decision, epoch: int) -> tuple[int | None, Decision]:
        """On a collapse with `on_collapse: rollback`: restore `best` with a lower LR and return
        the 0-based epoch to continue in; otherwise (None, the decision to stop with)."""
        nonlocal lr_factor, global_step
        if decision.reason != StopReason.COLLAPSED or config.on_collapse != OnCollapse.ROLLBACK:
            return None, decision
        if len(rollbacks) >= config.max_rollbacks:
            return None, replace(decision, message=f"{decision.message}; not rolled back: "
                                 f"{len(rollbacks)} of max_rollbacks={config.max_rollbacks} "
                                 "rollbacks used")
        saver.wait()  # `best` is read from disk: the save in flight may be writing it
        if not (ckpt_dir / "best").is_dir():
            return None, replace(decision, message=f"{decision.message}; cannot roll back: no "
                                 "evaluation has passed the guard at an epoch end yet, so there "
                                 "is no best checkpoint to return to")
        collapsed_at = global_step
        state = _restore(ckpt_dir / "best", model, optimizer, scheduler, scaler,
                         [guard, stopper, *callbacks], device)
        new_factor = lr_factor * config.rollback_lr_factor
        _scale_lr(optimizer, scheduler, new_factor / float(state.get("rollback", {})
                                                           .get("lr_factor", 1.0)))
        lr_factor, global_step = new_factor, int(state["global_step"])
        payload = {"epoch": epoch + 1, "step": collapsed_at, "to_epoch": int(state["epoch"]),
                   "to_step": global_step, "lr_factor": lr_factor,
                   "rollback": len(rollbacks) + 1, "max_rollbacks": config.max_rollbacks,
                   "reason": decision.message}
        rollbacks.append(payload)
        if publisher is not None:  # the epochs run again publish into new folders
            publisher.generation = len(rollbacks)
        log.warning("ROLLBACK %d/%d at step %d (epoch %d): %s; back to the best checkpoint "
                    "(epoch %d, step %d), LR x%.4g", payload["rollback"], config.max_rollbacks,
                    collapsed_at, epoch + 1, decision.message, payload["to_epoch"],
                    global_step, lr_factor)
        sink.event("rollback", payload)
        return int(state["epoch"]), decision

    history: list[dict[str, Any]] = []
    evaluations: list[dict[str, Any]] = []
    stop: Decision | None = None
    samples_seen, train_time = 0, 0.0
    n_batches, accum = len(train_loader), config.accumulation_steps
    eval_every = config.eval_every_steps
    epoch, epochs_done = start_epoch, start_epoch
    next_tally: EpochTally | None = resumed
    sync_every = host_sync_interval(device, log_every)
    unread = UnreadSteps(device)
    while epoch < config.epochs:
        # --- one epoch of optimizer steps (a resumed one continues at its saved position) ---
        tally = next_tally or EpochTally.resume(device, None)
        next_tally = None
        restart: int | None = None  # the epoch a rollback continues in
        stopped_mid = False  # the guard stopped inside the epoch: save `last` at that step
        batches = _epoch_batches(train_loader, epoch, tally.batches_done)
        model.train()
        t0 = time.perf_counter()
        group_loss = torch.zeros((), device=device, dtype=torch.float32)
        window_t0 = time.perf_counter()
        if progress:
            from tqdm.auto import tqdm
            batches = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                           total=n_batches, initial=tally.batches_done, dynamic_ncols=True)
        for i, batch in enumerate(batches, start=tally.batches_done):
            # The last group of an epoch may be short: divide by its real size so the
            # accumulated gradient is the mean of its micro-batch losses, exactly.
            group_size = min(accum, n_batches - (i // accum) * accum)
            labels = batch["labels"].to(device, non_blocking=True)
            with autocast_ctx:
                logits = forward(model, batch, device)
            loss = criterion(logits.float(), labels)
            scaler.scale(loss / group_size).backward()
            group_loss += loss.detach() / group_size
            tally.loss_sum += loss.detach().double() * labels.numel()
            tally.samples += labels.numel()
            if (i + 1) % accum and i + 1 != n_batches:
                continue
            # No host synchronisation in the step: a non-finite loss (or, without fp16 loss
            # scaling, gradient norm) skips the update on the device, and the host reads the
            # first such step at the next check, so a NaN update never reaches the weights.
            scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            bad = ~torch.isfinite(group_loss)
            if not scaler.is_enabled():  # under fp16 an overflow is the scaler's to handle
                bad |= ~torch.isfinite(grad_norm)
            _step_unless(optimizer, scaler, bad)
            scaler.update()
            scheduler.step()  # once per optimizer step, never per epoch
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            unread.record(global_step, group_loss, bad)
            group_loss.zero_()
            tally.batches_done = i + 1  # only ever at an optimizer-step boundary
            tally.window_steps += 1
            log_now = global_step % log_every == 0 or i + 1 == n_batches
            eval_now = bool(eval_every and global_step % eval_every == 0) and i + 1 != n_batches
            if log_now or eval_now or global_step % sync_every == 0:
                stop = unread.read(tally, epoch)
                if stop is not None:
                    break
            if log_now:
                # The same step indices on every attempt: a resumed run replaces, never adds.
                now, norm = time.perf_counter(), float(grad_norm.item())
                point_loss = tally.window_loss / tally.window_steps
                sink.log_step({
                    "step": global_step, "epoch": epoch + 1,
                    "epoch_progress": (i + 1) / n_batches, "total_steps": plan.total_steps,
                    "train_loss": point_loss, "lr": float(scheduler.get_last_lr()[0]),
                    # pre-clip; an fp16 overflow (the scaler skipped that step) reads as null
                    "grad_norm": norm if math.isfinite(norm) else None,
                    "samples_per_s": tally.window_steps * effective_batch
                    / max(now - window_t0, 1e-9),
                })
                tally.window_loss, tally.window_steps, window_t0 = 0.0, 0, now
                if progress and hasattr(batches, "set_postfix"):
                    batches.set_postfix(loss=f"{point_loss:.4f}",
                                        lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
            if eval_now:
                # --- mid-epoch evaluation (the epoch's last step gets the epoch record) -------
                # Its own time: evaluation is not training throughput.
                t_eval = time.perf_counter()
                val, decision = evaluate_now()
                mid = {**val.as_dict(), "val_loss": val.loss, "epoch": epoch + 1,
                       "step": global_step, "warnings": decision.warnings,
                       "collapse_streak": guard.consecutive}
                mid.pop("loss")
                evaluations.append(mid)
                log.info("step %d (epoch %d)  val_loss %.4f  F1 %.4f  AUC %s  %s", global_step,
                         epoch + 1, val.loss, val.f1,
                         "n/a" if val.roc_auc is None else f"{val.roc_auc:.4f}",
                         format_distribution(val))
                sink.event("evaluation", mid)
                report_warnings(epoch, val, decision)
                model.train()
                t0 += time.perf_counter() - t_eval
                if decision.stop:
                    restart, stop = roll_back(decision, epoch)
                    if restart is not None:
                        stop = None
                        break
                    stopped_mid = True
                    break
            stop = _first_stop([cb.on_step_end(global_step) for cb in callbacks])
            if stop is None and should_preempt():  # a flag read: cheap enough for every step
                stop = Decision(True, StopReason.PREEMPTED,
                                f"preempted at optimizer step {global_step} (epoch {epoch + 1}, "
                                f"batch {tally.batches_done} of {n_batches}); resume continues "
                                "from there")
            if stop is not None:  # a skipped update not yet read outranks it
                stop = unread.read(tally, epoch) or stop
                break
        if device.type == "cuda":
            torch.cuda.synchronize()
        tally.time_s += time.perf_counter() - t0
        samples_seen, train_time = samples_seen + tally.samples, train_time + tally.time_s
        if restart is not None:  # rolled back: the epoch starts again from `best`
            epoch, epochs_done = restart, restart
            continue
        if stop is not None and (stop.reason == StopReason.PREEMPTED or stopped_mid):
            # --- preempted or stopped by a mid-epoch evaluation: `last` at this exact step,
            # published (a resumed run continues there; the end of the run waits for it); no
            # epoch record, best kept ------------------------------------------------------
            position = {"epoch": epoch + 1, "step": global_step,
                        "batches_done_in_epoch": tally.batches_done,
                        "batches_in_epoch": n_batches}
            save_last(epoch, tally, is_best=False,
                      meta={**position, "preempted": stop.reason == StopReason.PREEMPTED,
                            "metrics": None},
                      metrics={**position, "lr": float(scheduler.get_last_lr()[0])})
        if stop is not None:  # preempted, non-finite loss, cancel or a guard stop mid-epoch
            break

        # --- evaluate, guard, report ------------------------------------------------------
        val, decision = evaluate_now()
        is_best, early = stopper.evaluate(
            val.as_dict().get(config.selection_metric), epoch + 1,
            eligible=not decision.stop and guard.healthy)
        record: dict[str, Any] = {
            "epoch": epoch + 1, "step": global_step,
            "train_loss": float(tally.loss_sum.item() / max(tally.samples, 1)),
            "val_loss": val.loss, **val.as_dict(),
            "lr": float(scheduler.get_last_lr()[0]),
            "train_samples_per_s": tally.samples / max(tally.time_s, 1e-9),
            "epoch_time_s": tally.time_s, "warnings": decision.warnings,
            "is_best": is_best, "collapse_streak": guard.consecutive,
        }
        record.pop("loss")
        history.append(record)
        evaluations.append(record)
        log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  acc %.4f  P %.4f  R %.4f  "
                 "F1 %.4f  MCC %.4f  AUC %s%s", epoch + 1, config.epochs, record["train_loss"],
                 val.loss, val.accuracy, val.precision, val.recall, val.f1, val.mcc,
                 "n/a" if val.roc_auc is None else f"{val.roc_auc:.4f}",
                 "  (best)" if is_best else "")
        log.info("  %s", format_distribution(val))
        sink.log_epoch(record)
        report_warnings(epoch, val, decision)
        if decision.stop:
            restart, decision = roll_back(decision, epoch)
            if restart is not None:  # this epoch's checkpoint is never saved; `last` stays
                epoch, epochs_done = restart, restart  # at the epoch before it
                continue

        # --- checkpoint: last always, best only among epochs that passed the guard --------
        # (written and published in the background while the next epoch trains)
        save_last(epoch, None, is_best=is_best, meta={"epoch": epoch + 1, "metrics": record},
                  metrics=record)
        epochs_done = epoch + 1
        stop = _first_stop([decision, early,
                            *[cb.on_epoch_end(epoch + 1, record) for cb in callbacks]])
        if stop is None and epoch + 1 < config.epochs and should_preempt():
            # Asked during the evaluation: this epoch's checkpoint is the resume point already.
            stop = Decision(True, StopReason.PREEMPTED,
                            f"preempted after epoch {epoch + 1} (optimizer step {global_step}); "
                            "resume continues from there")
        if stop is not None:
            break
        epoch += 1

    # --- outcome, then the best checkpoint on the test split -------------------------------
    saver.wait()  # every checkpoint durable: `last` published (a preempted run resumes from it)
    if stop is None or stop.reason == StopReason.EARLY_STOPPED:
        # Trained to the end (or early-stopped) without ever separating the classes: a model
        # that predicts one class is not `completed`, it did not learn.
        end = guard.at_end()
        stop = end if end.stop else stop
    if stop is None:
        outcome, message = StopReason.COMPLETED, f"completed {config.epochs} epoch(s)"
    else:
        outcome, message = stop.reason or StopReason.COMPLETED, stop.message
    result = RunResult(outcome, message, stopper.best_epoch, stopper.best, epochs_done,
                       global_step, history=history,
                       train_samples_per_s=samples_seen / max(train_time, 1e-9),
                       rollbacks=list(rollbacks), evaluations=evaluations)
    best_dir = ckpt_dir / "best"
    if best_dir.is_dir() and outcome != StopReason.PREEMPTED:  # the resumed run does this
        model_dir = ckpt.export_model_dir(best_dir, work_dir / "model")
        # The model's threshold: the best epoch's validation best-F1 threshold, read from best's
        # own meta (a resumed run's history may lack that epoch). The test split never picks it.
        threshold = (ckpt.load_meta(best_dir).get("metrics") or {}).get("best_threshold")
        if test_loader is not None:
            load_model(model, str(best_dir / "model.safetensors"), device=str(device))
            test = evaluate(model, test_loader, criterion, device, autocast_ctx)
            chosen = None if threshold is None else at_threshold(test, threshold)
            result.test_metrics = ckpt.to_native({**test.as_dict(), "threshold": threshold,
                                                  "at_threshold": chosen})
            log.info("test (best epoch %s): acc %.4f  F1 %.4f  MCC %.4f  %s", result.best_epoch,
                     test.accuracy, test.f1, test.mcc, format_distribution(test))
            if chosen is not None:
                log.info("test at the validation threshold %.4f: acc %.4f  P %.4f  R %.4f  "
                         "F1 %.4f  MCC %.4f", threshold, chosen["accuracy"],
                         chosen["precision"], chosen["recall"], chosen["f1"], chosen["mcc"])
            sink.event("test", {"best_epoch": result.best_epoch, **result.test_metrics})
        write_model_card(
            model_dir, config=config, history=history, outcome=outcome.value, message=message,
            events=guard_events(result.evaluations, result.rollbacks),
            best_epoch=result.best_epoch, test_metrics=result.test_metrics, threshold=threshold,
            data=card_data, created_by=created_by)
    log.info("outcome: %s: %s", outcome.value, message)
    for cb in callbacks:
        cb.on_train_end(outcome.value)
    sink.finish(outcome.value, message)
    return result
