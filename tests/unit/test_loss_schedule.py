"""Pure functions with hand-computed values: class weights, LR scaling, steps, the schedule."""

import math

import pytest
import torch

from streamguard.training.loss import class_weights, make_loss
from streamguard.training.schedule import (
    build_scheduler,
    num_update_steps,
    plan_lr,
    scale_lr,
    scale_warmup_ratio,
)


def test_class_weights_devign_counts():
    # 21,854 / (2 * 11,836) = 0.92320; 21,854 / (2 * 10,018) = 1.09074
    w = class_weights([11_836, 10_018], "balanced")
    assert w.dtype == torch.float32
    assert w.tolist() == pytest.approx([0.9232, 1.0907], abs=1e-4)


def test_class_weights_none_and_errors():
    assert class_weights([9, 1], "none").tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="at least one"):
        class_weights([10, 0], "balanced")
    with pytest.raises(ValueError, match="allowed: balanced, none"):
        class_weights([1, 1], "focal")


def test_loss_is_weighted_smoothed_mean():
    crit = make_loss(torch.tensor([1.0, 3.0]), label_smoothing=0.05, device=torch.device("cpu"))
    assert crit.reduction == "mean" and crit.label_smoothing == 0.05
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.2]])
    labels = torch.tensor([0, 1])
    # By hand: smoothed targets, weighted per target class, divided by the weight sum.
    logp = torch.log_softmax(logits, -1)
    w = torch.tensor([1.0, 3.0])
    per = []
    for i, y in enumerate(labels.tolist()):
        nll = -logp[i, y] * w[y]
        smooth = -(logp[i] * w).sum() / 2
        per.append(0.95 * nll + 0.05 * smooth)
    expected = sum(per) / (w[0] + w[1])
    assert crit(logits, labels).item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize(("batch", "lr", "warmup"), [
    (64, 4e-5, 0.20),   # sqrt(4) = 2: 4e-5, warmup 0.1 * 2 = 0.2 (at the cap)
    (32, 2.8284e-5, 0.1414),
    (16, 2e-5, 0.10),
    (8, 2e-5, 0.10),    # never scaled down below the base batch
])
def test_sqrt_lr_scaling_rows(batch, lr, warmup):
    assert scale_lr(2e-5, batch, 16, "sqrt") == pytest.approx(lr, rel=1e-4)
    factor = math.sqrt(batch / 16) if batch > 16 else 1.0
    assert scale_warmup_ratio(0.1, factor, 0.2) == pytest.approx(warmup, rel=1e-3)


def test_warmup_is_capped_and_linear_rule():
    assert scale_warmup_ratio(0.1, math.sqrt(256 / 16), 0.2) == 0.2
    assert scale_lr(1e-3, 64, 16, "linear") == pytest.approx(4e-3)
    assert scale_lr(1e-3, 64, 16, "none") == 1e-3


@pytest.mark.parametrize(("batches", "accum", "epochs", "expected"), [
    (100, 1, 3, 300), (100, 4, 3, 75), (101, 4, 3, 78), (7, 8, 2, 2),
])
def test_total_steps_counts_accumulation(batches, accum, epochs, expected):
    assert num_update_steps(batches, accum, epochs) == expected


def test_scheduler_stepped_total_steps_times_ends_at_zero():
    plan = plan_lr(base_lr=2e-5, batch_size=64, base_batch=16, rule="sqrt", warmup_ratio=0.1,
                   max_warmup_ratio=0.2, batches_per_epoch=50, accumulation_steps=2, epochs=4)
    assert plan.total_steps == 100 and plan.warmup_steps == 20 and plan.lr == pytest.approx(4e-5)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=plan.lr)
    sched = build_scheduler(opt, plan)
    lrs = [sched.get_last_lr()[0]]
    for _ in range(plan.total_steps):
        opt.step()
        sched.step()
        lrs.append(sched.get_last_lr()[0])
    assert lrs[0] == 0.0
    assert max(lrs) == pytest.approx(4e-5) and lrs.index(max(lrs)) == plan.warmup_steps
    assert lrs[-1] == 0.0
    assert "x2.000 for batch 64 (ref 16)" in plan.banner(64, 16)
