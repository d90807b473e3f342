"""Class-balanced cross-entropy: the first defence against a run that learns to say "safe".

Weights are data computed once from the training labels, printed in the banner and saved in the
checkpoint, so a run's loss can be reproduced from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def class_weights(label_counts: Sequence[int], scheme: str = "balanced") -> torch.Tensor:
    """Inverse-frequency weights `total / (num_classes * count)` as float32 (all ones for "none").

    Raises:
        ValueError: a class has no examples (a balanced weight would be infinite), or the scheme
            is unknown.
    """
    counts = [int(c) for c in label_counts]
    if scheme == "none":
        return torch.ones(len(counts), dtype=torch.float32)
    if scheme != "balanced":
        raise ValueError(f"unknown class weighting {scheme!r}; allowed: balanced, none")
    if any(c <= 0 for c in counts):
        raise ValueError(f"every class needs at least one training example, got counts {counts}")
    total = sum(counts)
    return torch.tensor([total / (len(counts) * c) for c in counts], dtype=torch.float32)


def make_loss(weights: torch.Tensor, *, label_smoothing: float,
              device: torch.device) -> nn.CrossEntropyLoss:
    """Weighted CE with label smoothing and mean reduction; no per-sample weights anywhere.

    Note that with `weight=` the mean is the weighted mean (divided by the sum of the weights of
    the batch's targets), which is what PyTorch defines for reduction='mean'.
    """
    return nn.CrossEntropyLoss(weight=weights.to(device=device, dtype=torch.float32),
                               label_smoothing=label_smoothing, reduction="mean")
