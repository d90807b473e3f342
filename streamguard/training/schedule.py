"""LR scaling and the per-optimizer-step schedule, as pure functions.

Why sqrt: for Adam-family optimizers the gradient noise scale argument gives lr ∝ sqrt(B)
(linear scaling is the SGD rule and over-shoots AdamW at 4x batch). The warmup ratio is scaled by
the same factor (a bigger step needs a longer ramp) and capped, so batch 64 warms up for 20 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import get_linear_schedule_with_warmup


@dataclass(frozen=True)
class LrPlan:
    lr: float
    factor: float
    warmup_ratio: float
    total_steps: int
    warmup_steps: int

    def banner(self, batch: int, base_batch: int) -> str:
        return (f"LR scaled x{self.factor:.3f} for batch {batch} (ref {base_batch}): "
                f"lr {self.lr:.3g}, warmup {self.warmup_ratio:.1%} = {self.warmup_steps} of "
                f"{self.total_steps} optimizer steps")


def lr_factor(batch_size: int, base_batch: int, rule: str) -> float:
    """The LR multiplier: 1 at or below base_batch; sqrt or linear in batch/base_batch above."""
    if rule == "none" or batch_size <= base_batch:
        return 1.0
    ratio = batch_size / base_batch
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule == "linear":
        return ratio
    raise ValueError(f"unknown lr_scaling {rule!r}; allowed: sqrt, linear, none")


def scale_lr(base_lr: float, batch_size: int, base_batch: int, rule: str) -> float:
    return base_lr * lr_factor(batch_size, base_batch, rule)


def scale_warmup_ratio(warmup_ratio: float, factor: float, max_ratio: float) -> float:
    return min(warmup_ratio * factor, max_ratio)


def num_update_steps(batches_per_epoch: int, accumulation_steps: int, epochs: int) -> int:
    """Optimizer steps in the run: ceil(batches / accumulation) per epoch, times epochs."""
    return math.ceil(batches_per_epoch / accumulation_steps) * epochs


def plan_lr(*, base_lr: float, batch_size: int, base_batch: int, rule: str, warmup_ratio: float,
            max_warmup_ratio: float, batches_per_epoch: int, accumulation_steps: int,
            epochs: int) -> LrPlan:
    """Derive every LR number of a run once, before the loop. `batch_size` is the effective batch
    (per-step batch x accumulation steps): that is what the gradient noise depends on."""
    factor = lr_factor(batch_size, base_batch, rule)
    ratio = scale_warmup_ratio(warmup_ratio, factor, max_warmup_ratio)
    total = num_update_steps(batches_per_epoch, accumulation_steps, epochs)
    return LrPlan(lr=base_lr * factor, factor=factor, warmup_ratio=ratio, total_steps=total,
                  warmup_steps=math.ceil(total * ratio))


def build_scheduler(optimizer: torch.optim.Optimizer,
                    plan: LrPlan) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup then linear decay to 0, to be stepped once after every optimizer step."""
    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=plan.warmup_steps,
                                           num_training_steps=plan.total_steps)
