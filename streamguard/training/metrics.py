"""Validation metrics as one typed record, computed once per evaluation from gathered logits.

F1 alone hides a collapse (always predicting "vulnerable" scores F1 ~0.63 on Devign), so every
record carries the prediction distribution next to the scores. It also carries what a security
team ranks and calibrates by (docs/metrics.md has the formulas and what each one means):

- `pr_auc`: average precision, scikit-learn's definition (step-wise, no interpolation);
- `recall_at_fpr10`: the best recall at a false-positive rate of at most 10 %;
- `best_threshold` / `best_threshold_f1`: the probability threshold maximising F1 on this split;
- `brier` and `ece`: calibration of p(vulnerable).

`p` is always p(vulnerable) = softmax(logits)[:, 1], computed in float64 (`vulnerable_probability`),
and at a threshold `t` a function is predicted vulnerable when `p >= t`. The record's own
accuracy/precision/recall/F1/MCC use argmax of the logits, the same as `p >= 0.5` except for
exactly tied logits (argmax says safe there). `at_threshold` re-scores the kept probabilities at
another threshold (the one chosen on validation). Torch only, vectorised: O(N log N) for N examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

LABELS = ("safe", "vulnerable")
MAX_FPR = 0.10  # the false-positive budget of `recall_at_fpr10`
ECE_BINS = 10


@dataclass(frozen=True)
class EvalMetrics:
    """Metrics of one evaluation. `f1`, `precision` and `recall` are for the vulnerable class.

    Ranking metrics (`roc_auc`, `pr_auc`, `recall_at_fpr10`, `best_threshold*`) are None when
    the split lacks one of the two classes; `brier` and `ece` are None only for an empty split
    or non-finite logits. `scores` (p(vulnerable), float64) and `labels` are kept for
    `at_threshold` and are not part of `as_dict`.
    """

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
    pr_auc: float | None = None
    recall_at_fpr10: float | None = None
    best_threshold: float | None = None
    best_threshold_f1: float | None = None
    brier: float | None = None
    ece: float | None = None
    scores: torch.Tensor | None = field(default=None, repr=False, compare=False)
    labels: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def pred_distribution(self) -> dict[str, int]:
        return {"predicted_vulnerable": self.predicted[1], "predicted_safe": self.predicted[0],
                "actual_vulnerable": self.actual[1], "actual_safe": self.actual[0]}

    def as_dict(self, prefix: str = "") -> dict[str, Any]:
        """JSON-native flat view (None for undefined values, never NaN; no tensors)."""
        return {
            f"{prefix}loss": self.loss, f"{prefix}accuracy": self.accuracy,
            f"{prefix}precision": self.precision, f"{prefix}recall": self.recall,
            f"{prefix}f1": self.f1, f"{prefix}mcc": self.mcc, f"{prefix}roc_auc": self.roc_auc,
            f"{prefix}pr_auc": self.pr_auc, f"{prefix}recall_at_fpr10": self.recall_at_fpr10,
            f"{prefix}best_threshold": self.best_threshold,
            f"{prefix}best_threshold_f1": self.best_threshold_f1,
            f"{prefix}brier": self.brier, f"{prefix}ece": self.ece,
            f"{prefix}confusion_matrix": self.confusion,
            f"{prefix}prediction_distribution": self.pred_distribution,
        }


def _safe_div(num: float, den: float) -> float:
    return num / den if den else 0.0


def vulnerable_probability(logits: torch.Tensor) -> torch.Tensor:
    """p(vulnerable) of [N, 2] logits: softmax in float64, so a saved threshold re-applies."""
    if not logits.numel():
        return torch.zeros(0, dtype=torch.float64)
    return torch.softmax(logits.double(), dim=-1)[:, 1].contiguous()


def _both_classes(scores: torch.Tensor, labels: torch.Tensor) -> bool:
    n_pos = int(labels.sum())
    return 0 < n_pos < labels.numel() and bool(torch.isfinite(scores).all())


def binary_curve(scores: torch.Tensor,
                 labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(thresholds, tps, fps): one point per distinct score, thresholds descending.

    tps[k] / fps[k] count the positives / negatives with `score >= thresholds[k]`: tied scores
    move together (scikit-learn's `_binary_clf_curve`, the base of its ROC and PR curves).
    """
    order = torch.argsort(scores, descending=True, stable=True)
    s, y = scores[order], labels[order].long()
    tps = torch.cumsum(y, 0)
    fps = torch.arange(1, y.numel() + 1) - tps
    last = torch.ones_like(s, dtype=torch.bool)  # the last index of each run of equal scores
    last[:-1] = s[1:] != s[:-1]
    return s[last], tps[last], fps[last]


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """ROC-AUC via the Mann-Whitney statistic with average ranks for ties; None if one class."""
    labels = labels.long()
    if not _both_classes(scores, labels):
        return None
    n_pos = int(labels.sum())
    n_neg = labels.numel() - n_pos
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


def average_precision(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """PR-AUC as sum_k (R_k - R_{k-1}) P_k over distinct thresholds (R_0 = 0); None if one class.

    scikit-learn's `average_precision_score`: no interpolation, ties move as one point.
    """
    labels = labels.long()
    if not _both_classes(scores, labels):
        return None
    _, tps, fps = binary_curve(scores.double(), labels)
    precision = tps.double() / (tps + fps).double()
    recall = tps.double() / float(tps[-1])
    gain = torch.diff(recall, prepend=recall.new_zeros(1))
    return float((gain * precision).sum())


def recall_at_fpr(scores: torch.Tensor, labels: torch.Tensor,
                  max_fpr: float = MAX_FPR) -> float | None:
    """The highest TPR among ROC points with FPR <= `max_fpr`; None if one class.

    The points are scikit-learn's `roc_curve(drop_intermediate=False)`: (0, 0) and one point
    per distinct score `t` (predict vulnerable when `p >= t`), so the recall is one a real
    threshold reaches (no interpolation between points).
    """
    labels = labels.long()
    if not _both_classes(scores, labels):
        return None
    _, tps, fps = binary_curve(scores.double(), labels)
    n_pos, n_neg = int(tps[-1]), int(fps[-1])
    within = fps.double() / n_neg <= max_fpr
    return float(tps[within].max()) / n_pos if bool(within.any()) else 0.0


def best_f1_threshold(scores: torch.Tensor,
                      labels: torch.Tensor) -> tuple[float, float] | tuple[None, None]:
    """(threshold, F1): the observed score `t` maximising the vulnerable F1 of `p >= t`.

    F1 = 2 TP / (2 TP + FP + FN), exact in float64 so equal F1s compare equal. Ties go to the
    LOWEST threshold (more recall for the same F1: a missed vulnerability costs more than a
    second look). (None, None) when the split lacks a class.
    """
    labels = labels.long()
    if not _both_classes(scores, labels):
        return None, None
    thresholds, tps, fps = binary_curve(scores.double(), labels)
    n_pos = float(tps[-1])
    f1 = 2 * tps.double() / (tps.double() + fps.double() + n_pos)
    best = f1.max()
    k = int(torch.nonzero(f1 == best).max())  # descending thresholds: the last is the lowest
    return float(thresholds[k]), float(best)


def brier_score(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Mean of (p - y)^2; None for an empty split or non-finite scores."""
    if not labels.numel() or not bool(torch.isfinite(scores).all()):
        return None
    return float(((scores.double() - labels.double()) ** 2).mean())


def expected_calibration_error(scores: torch.Tensor, labels: torch.Tensor,
                               n_bins: int = ECE_BINS) -> float | None:
    """sum_b (n_b / N) |mean(y in b) - mean(p in b)| over equal-width bins of p(vulnerable).

    Bin b covers (b/n, (b+1)/n], the first one [0, 1/n] (the binning of scikit-learn's
    `calibration_curve(strategy="uniform")`). None for an empty split or non-finite scores.
    """
    if not labels.numel() or not bool(torch.isfinite(scores).all()):
        return None
    p, y = scores.double(), labels.double()
    inner = torch.tensor([b / n_bins for b in range(1, n_bins)], dtype=torch.float64)
    bins = torch.bucketize(p, inner, right=False)  # boundaries[i-1] < p <= boundaries[i]
    sum_p = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, p)
    sum_y = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bins, y)
    # n_b/N * |sum_y/n_b - sum_p/n_b| = |sum_y - sum_p| / N (empty bins add 0)
    return float((sum_y - sum_p).abs().sum() / p.numel())


def _threshold_scores(preds: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Accuracy, P/R/F1 (vulnerable), MCC, confusion[actual][predicted] and counts."""
    confusion = torch.zeros(2, 2, dtype=torch.long)
    confusion.index_put_((labels, preds), torch.ones_like(labels), accumulate=True)
    tn, fp, fn, tp = (int(v) for v in confusion.flatten())
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return {"accuracy": _safe_div(tp + tn, labels.numel()), "precision": precision,
            "recall": recall, "f1": _safe_div(2 * precision * recall, precision + recall),
            "mcc": _safe_div(tp * tn - fp * fn, denom), "confusion": confusion.tolist(),
            "predicted": [tn + fn, fp + tp], "actual": [tn + fp, fn + tp]}


def compute_metrics(logits: torch.Tensor, labels: torch.Tensor, loss: float) -> EvalMetrics:
    """Binary metrics from [N, 2] logits and [N] labels (both on CPU)."""
    logits = logits.float()
    labels = labels.long()
    base = _threshold_scores(logits.argmax(dim=-1), labels)
    probs = vulnerable_probability(logits)
    threshold, threshold_f1 = best_f1_threshold(probs, labels)
    return EvalMetrics(
        loss=float(loss), **base,
        roc_auc=roc_auc(probs, labels),
        pr_auc=average_precision(probs, labels),
        recall_at_fpr10=recall_at_fpr(probs, labels, MAX_FPR),
        best_threshold=threshold, best_threshold_f1=threshold_f1,
        brier=brier_score(probs, labels), ece=expected_calibration_error(probs, labels),
        scores=probs, labels=labels,
    )


def at_threshold(metrics: EvalMetrics, threshold: float) -> dict[str, Any]:
    """Threshold-dependent scores with "vulnerable" when p >= `threshold` (JSON-native).

    Keys: threshold, accuracy, precision, recall, f1, mcc, confusion_matrix ([[tn, fp],
    [fn, tp]]) and prediction_distribution, as in `EvalMetrics.as_dict`.

    Raises:
        ValueError: `metrics` keeps no probabilities (not built by `compute_metrics`), or the
            threshold is not a finite number.
    """
    if metrics.scores is None or metrics.labels is None:
        raise ValueError("these metrics keep no probabilities; build them with compute_metrics")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    s = _threshold_scores((metrics.scores >= threshold).long(), metrics.labels)
    predicted, actual = s["predicted"], s["actual"]
    return {"threshold": float(threshold), "accuracy": s["accuracy"],
            "precision": s["precision"], "recall": s["recall"], "f1": s["f1"], "mcc": s["mcc"],
            "confusion_matrix": s["confusion"],
            "prediction_distribution": {
                "predicted_vulnerable": predicted[1], "predicted_safe": predicted[0],
                "actual_vulnerable": actual[1], "actual_safe": actual[0]}}


def format_distribution(m: EvalMetrics) -> str:
    """`predicted vulnerable 120 (43.5%) / safe 156 (56.5%); actual 126 (45.7%) / 150 (54.3%)`."""
    n = max(sum(m.actual), 1)
    return (f"predicted vulnerable {m.predicted[1]} ({m.predicted[1] / n:.1%}) / "
            f"safe {m.predicted[0]} ({m.predicted[0] / n:.1%}); "
            f"actual vulnerable {m.actual[1]} ({m.actual[1] / n:.1%}) / "
            f"safe {m.actual[0]} ({m.actual[0] / n:.1%})")
