"""Validation metrics as one typed record, computed once per evaluation from gathered logits.

F1 alone hides a collapse (always predicting "vulnerable" scores F1 ~0.63 on Devign), so every
record carries the prediction distribution next to the scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

LABELS = ("safe", "vulnerable")


@dataclass(frozen=True)
class EvalMetrics:
    """Metrics of one evaluation. `f1`, `precision` and `recall` are for the vulnerable class."""

    loss: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    mcc: float
    roc_auc: float | None
    confusion: list[list[int]]  # confusion[actual][predicted]
    predicted: list[int]  # predictions per class
    actual: list[int]  # labels per class

    @property
    def pred_distribution(self) -> dict[str, int]:
        return {"predicted_vulnerable": self.predicted[1], "predicted_safe": self.predicted[0],
                "actual_vulnerable": self.actual[1], "actual_safe": self.actual[0]}

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """JSON-native flat view (None for an undefined ROC-AUC)."""
        return {
            f"{prefix}loss": self.loss, f"{prefix}accuracy": self.accuracy,
            f"{prefix}precision": self.precision, f"{prefix}recall": self.recall,
            f"{prefix}f1": self.f1, f"{prefix}mcc": self.mcc, f"{prefix}roc_auc": self.roc_auc,
            f"{prefix}confusion_matrix": self.confusion,
            f"{prefix}prediction_distribution": self.pred_distribution,
        }


def _safe_div(num: float, den: float) -> float:
    return num / den if den else 0.0


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """ROC-AUC via the Mann-Whitney statistic with average ranks for ties; None if one class."""
    labels = labels.long()
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    scores = scores.double()
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    # Average ranks over runs of tied scores (1-based ranks).
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True,
                                                  return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg_rank = ends - (counts.double() - 1) / 2
    ranks[order] = avg_rank[inverse]
    rank_sum_pos = float(ranks[labels == 1].sum())
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor, loss: float) -> EvalMetrics:
    """Binary metrics from [N, 2] logits and [N] labels (both on CPU)."""
    logits = logits.float()
    labels = labels.long()
    preds = logits.argmax(dim=-1)
    confusion = torch.zeros(2, 2, dtype=torch.long)
    confusion.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    tn, fp, fn, tp = (int(v) for v in confusion.flatten())
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = _safe_div(tp * tn - fp * fn, denom)
    probs = torch.softmax(logits, dim=-1)[:, 1] if logits.numel() else logits.new_zeros(0)
    return EvalMetrics(
        loss=float(loss),
        accuracy=_safe_div(tp + tn, labels.numel()),
        precision=precision, recall=recall, f1=f1, mcc=mcc,
        roc_auc=roc_auc(probs, labels),
        confusion=confusion.tolist(),
        predicted=[tn + fn, fp + tp],
        actual=[tn + fp, fn + tp],
    )


def format_distribution(m: EvalMetrics) -> str:
    """`predicted vulnerable 120 (43.5%) / safe 156 (56.5%); actual 126 (45.7%) / 150 (54.3%)`."""
    n = max(sum(m.actual), 1)
    return (f"predicted vulnerable {m.predicted[1]} ({m.predicted[1] / n:.1%}) / "
            f"safe {m.predicted[0]} ({m.predicted[0] / n:.1%}); "
            f"actual vulnerable {m.actual[1]} ({m.actual[1] / n:.1%}) / "
            f"safe {m.actual[0]} ({m.actual[0] / n:.1%})")
