"""PR-AUC, recall at 10 % FPR, the best-F1 threshold, Brier and ECE against scikit-learn.

scikit-learn is a test oracle only (the dev extra); the library computes everything with torch.
The arrays are fixed and include ties, one-class splits, perfect and inverted rankings.
"""

import json
import math

import numpy as np
import pytest
import sklearn.metrics as sk  # the test oracle (a dev dependency: missing, this fails)
import torch

from streamguard.training.metrics import (
    EvalMetrics,
    at_threshold,
    average_precision,
    best_f1_threshold,
    brier_score,
    compute_metrics,
    expected_calibration_error,
    recall_at_fpr,
)

_rng = np.random.default_rng(7)
_ties_y = _rng.integers(0, 2, 60)
#: (scores, labels), both classes present
CASES = {
    "hand_ties": ([0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.9, 0.05, 0.35, 0.6],
                  [0, 0, 1, 1, 1, 0, 1, 0, 0, 1]),
    # scores on a 0.1 grid: many ties, some across both classes, some on ECE bin edges
    "grid_ties": (np.clip(np.round(_rng.normal(0.45 + 0.2 * _ties_y, 0.25), 1), 0, 1).tolist(),
                  _ties_y.tolist()),
    "continuous": (_rng.uniform(0, 1, 200).tolist(), _rng.integers(0, 2, 200).tolist()),
    "perfect": ([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [1, 1, 1, 0, 0, 0]),
    "inverted": ([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [0, 0, 0, 1, 1, 1]),
    "all_tied": ([0.5] * 8, [1, 0, 1, 0, 0, 0, 1, 0]),
    "extremes": ([0.0, 1.0, 0.0, 1.0, 0.5], [0, 1, 1, 0, 1]),
    # F1 2/3 at 0.9 (tp 1, fp 0) and again at 0.4 (tp 2, fp 2): the tie goes to 0.4
    "f1_tie": ([0.9, 0.7, 0.6, 0.4, 0.2], [1, 0, 0, 1, 0]),
}


def tensors(scores, labels):
    return torch.tensor(scores, dtype=torch.float64), torch.tensor(labels)


def ece_reference(p, y, n_bins=10):
    """Written from the definition: bins (b/n, (b+1)/n], the first closed at 0."""
    p, y = np.asarray(p, dtype=float), np.asarray(y, dtype=float)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        in_bin = (p > lo) & (p <= hi) if b else (p >= lo) & (p <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(y[in_bin].mean() - p[in_bin].mean())
    return total


def best_threshold_reference(p, y):
    """precision_recall_curve's thresholds; max F1, ties to the lowest threshold."""
    precision, recall, thresholds = sk.precision_recall_curve(y, p)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    best = f1.max()
    k = int(np.flatnonzero(np.isclose(f1, best, rtol=1e-12, atol=0))[0])  # ascending
    return float(thresholds[k]), float(best)


@pytest.mark.parametrize("name", CASES)
def test_ranking_metrics_match_sklearn(name):
    scores, labels = CASES[name]
    s, y = tensors(scores, labels)
    assert average_precision(s, y) == pytest.approx(sk.average_precision_score(labels, scores),
                                                    rel=1e-12)
    fpr, tpr, _ = sk.roc_curve(labels, scores, drop_intermediate=False)
    assert recall_at_fpr(s, y, 0.10) == pytest.approx(tpr[fpr <= 0.10].max(), rel=1e-12)
    assert recall_at_fpr(s, y, 0.5) == pytest.approx(tpr[fpr <= 0.5].max(), rel=1e-12)
    threshold, f1 = best_f1_threshold(s, y)
    ref_threshold, ref_f1 = best_threshold_reference(scores, labels)
    assert threshold == ref_threshold
    assert f1 == pytest.approx(ref_f1, rel=1e-12)
    # the threshold reproduces its F1 under the documented rule "vulnerable when p >= t"
    assert f1 == pytest.approx(sk.f1_score(labels, np.asarray(scores) >= threshold), rel=1e-12)


@pytest.mark.parametrize("name", CASES)
def test_calibration_matches_sklearn_and_the_reference(name):
    scores, labels = CASES[name]
    s, y = tensors(scores, labels)
    assert brier_score(s, y) == pytest.approx(sk.brier_score_loss(labels, scores), rel=1e-12)
    assert expected_calibration_error(s, y) == pytest.approx(ece_reference(scores, labels),
                                                             rel=1e-12, abs=1e-15)


def test_ece_bins_agree_with_sklearn_calibration_curve():
    """Away from bin edges, ECE is the count-weighted gap of calibration_curve's bins."""
    from sklearn.calibration import calibration_curve

    scores, labels = CASES["continuous"]
    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    counts = np.bincount(np.minimum((np.asarray(scores) * 10).astype(int), 9), minlength=10)
    counts = counts[counts > 0]
    expected = float(np.sum(counts / len(scores) * np.abs(prob_true - prob_pred)))
    assert expected_calibration_error(*tensors(scores, labels)) == pytest.approx(expected,
                                                                                rel=1e-12)


def test_perfect_and_inverted_rankings_by_hand():
    perfect, inverted = CASES["perfect"], CASES["inverted"]
    assert average_precision(*tensors(*perfect)) == 1.0
    assert recall_at_fpr(*tensors(*perfect)) == 1.0
    assert best_f1_threshold(*tensors(*perfect)) == (0.7, 1.0)
    assert recall_at_fpr(*tensors(*inverted)) == 0.0  # only the (0, 0) point is within 10 %
    # inverted: the best F1 is "everything vulnerable" at the lowest score: 2*3 / (2*3 + 3)
    assert best_f1_threshold(*tensors(*inverted)) == (0.1, pytest.approx(2 / 3))


def test_best_threshold_tie_goes_to_the_lowest_threshold():
    assert best_f1_threshold(*tensors(*CASES["f1_tie"])) == (0.4, pytest.approx(2 / 3))


def test_tied_scores_move_together():
    # the two 0.4 scores (one safe, one vulnerable) are one threshold: no half-credit order
    s, y = tensors([0.9, 0.4, 0.4, 0.1], [1, 0, 1, 0])
    # thresholds 0.9 (R=1/2, P=1), 0.4 (R=1, P=2/3), 0.1 (R=1, P=1/2)
    assert average_precision(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert sk.average_precision_score([1, 0, 1, 0], [0.9, 0.4, 0.4, 0.1]) == pytest.approx(
        0.5 * 1 + 0.5 * 2 / 3)


def test_recall_at_fpr_uses_every_roc_point_not_the_dropped_ones():
    """sklearn's default roc_curve drops collinear points; an operating point is still real."""
    # 20 score levels, each one vulnerable and one safe: the ROC points (k/20, k/20) all lie on
    # the diagonal, and drop_intermediate=True keeps only the first and the last of them.
    scores = [v for k in range(20) for v in (1 - k / 20,) * 2]
    labels = [1, 0] * 20
    fpr, tpr, _ = sk.roc_curve(labels, scores)  # drop_intermediate=True
    assert tpr[fpr <= 0.10].max() == pytest.approx(0.05)
    assert recall_at_fpr(*tensors(scores, labels)) == pytest.approx(0.10)


@pytest.mark.parametrize("labels", [[0] * 6, [1] * 6])
def test_one_class_split_gives_none_not_nan(labels):
    scores = [0.9, 0.8, 0.5, 0.5, 0.2, 0.1]
    s, y = tensors(scores, labels)
    assert average_precision(s, y) is None
    assert recall_at_fpr(s, y) is None
    assert best_f1_threshold(s, y) == (None, None)
    # calibration is defined for one class, and sklearn agrees
    assert brier_score(s, y) == pytest.approx(sk.brier_score_loss(labels, scores, pos_label=1))
    assert expected_calibration_error(s, y) == pytest.approx(ece_reference(scores, labels))
    m = compute_metrics(torch.tensor([[0.0, math.log(p / (1 - p))] for p in scores]), y, 0.3)
    d = m.as_dict()
    assert all(d[k] is None for k in ("roc_auc", "pr_auc", "recall_at_fpr10", "best_threshold",
                                      "best_threshold_f1"))
    json.dumps(d, allow_nan=False)


def test_empty_and_non_finite_splits_give_none():
    m = compute_metrics(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 0.0)
    assert m.brier is None and m.ece is None and m.pr_auc is None
    logits = torch.tensor([[0.0, float("nan")], [0.0, 1.0], [1.0, 0.0]])
    m = compute_metrics(logits, torch.tensor([1, 1, 0]), float("nan"))
    assert all(m.as_dict()[k] is None for k in ("roc_auc", "pr_auc", "recall_at_fpr10",
                                                "best_threshold", "brier", "ece"))


def logits_for_probs(probs):
    """[0, logit(p)] rows: softmax recovers p up to rounding; equal p give equal rows."""
    p = torch.tensor(probs, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1).float()


@pytest.mark.parametrize("name", ["grid_ties", "continuous", "hand_ties"])
def test_compute_metrics_end_to_end(name):
    scores, labels = CASES[name]
    m = compute_metrics(logits_for_probs(scores), torch.tensor(labels), 0.7)
    p = m.scores.numpy()
    assert m.scores.dtype == torch.float64
    np.testing.assert_allclose(p, np.clip(scores, 1e-6, 1 - 1e-6), rtol=1e-5)
    d = m.as_dict("val/")
    assert d["val/pr_auc"] == pytest.approx(sk.average_precision_score(labels, p), rel=1e-12)
    assert d["val/roc_auc"] == pytest.approx(sk.roc_auc_score(labels, p), rel=1e-12)
    fpr, tpr, _ = sk.roc_curve(labels, p, drop_intermediate=False)
    assert d["val/recall_at_fpr10"] == pytest.approx(tpr[fpr <= 0.1].max())
    assert (d["val/best_threshold"], d["val/best_threshold_f1"]) == pytest.approx(
        best_threshold_reference(p, labels))
    assert d["val/brier"] == pytest.approx(sk.brier_score_loss(labels, p), rel=1e-12)
    assert d["val/ece"] == pytest.approx(ece_reference(p, labels), rel=1e-12)
    assert json.loads(json.dumps(d, allow_nan=False)) == d  # JSON-native, no tensors
    assert all(type(d[f"val/{k}"]) is float for k in ("pr_auc", "recall_at_fpr10",
                                                      "best_threshold", "brier", "ece"))


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.35, 0.4, 0.5, 0.85, 1.0])
def test_at_threshold_matches_sklearn(threshold):
    scores, labels = CASES["hand_ties"]
    m = compute_metrics(logits_for_probs(scores), torch.tensor(labels), 0.7)
    p = m.scores.numpy()
    pred = (p >= threshold).astype(int)  # 0.35 and 0.4 are tied scores: >= takes them all
    got = at_threshold(m, threshold)
    assert got["threshold"] == threshold
    assert got["confusion_matrix"] == sk.confusion_matrix(labels, pred, labels=[0, 1]).tolist()
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(labels, pred))
    kw = {"zero_division": 0}
    assert got["precision"] == pytest.approx(sk.precision_score(labels, pred, **kw))
    assert got["recall"] == pytest.approx(sk.recall_score(labels, pred, **kw))
    assert got["f1"] == pytest.approx(sk.f1_score(labels, pred, **kw))
    assert got["mcc"] == pytest.approx(sk.matthews_corrcoef(labels, pred))
    assert got["prediction_distribution"] == {
        "predicted_vulnerable": int(pred.sum()), "predicted_safe": int((1 - pred).sum()),
        "actual_vulnerable": sum(labels), "actual_safe": len(labels) - sum(labels)}
    json.dumps(got, allow_nan=False)


def test_at_threshold_half_equals_the_argmax_scores_and_best_threshold_its_f1():
    scores, labels = CASES["continuous"]
    m = compute_metrics(logits_for_probs(scores), torch.tensor(labels), 0.7)
    half, base = at_threshold(m, 0.5), m.as_dict()
    assert {k: half[k] for k in ("accuracy", "precision", "recall", "f1", "mcc",
                                 "confusion_matrix", "prediction_distribution")} == {
        k: base[k] for k in ("accuracy", "precision", "recall", "f1", "mcc",
                             "confusion_matrix", "prediction_distribution")}
    assert at_threshold(m, m.best_threshold)["f1"] == pytest.approx(m.best_threshold_f1)


def test_at_threshold_needs_probabilities_and_a_finite_threshold():
    bare = EvalMetrics(loss=0.1, accuracy=1.0, precision=1.0, recall=1.0, f1=1.0, mcc=1.0,
                       roc_auc=1.0, confusion=[[1, 0], [0, 1]], predicted=[1, 1], actual=[1, 1])
    with pytest.raises(ValueError, match="no probabilities"):
        at_threshold(bare, 0.5)
    m = compute_metrics(logits_for_probs([0.2, 0.8]), torch.tensor([0, 1]), 0.1)
    with pytest.raises(ValueError, match="finite"):
        at_threshold(m, float("nan"))
    assert "scores" not in repr(m) and "scores" not in m.as_dict()


def test_fast_on_30k_examples():
    import time

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (30_000,), generator=gen)
    logits = torch.randn(30_000, 2, generator=gen) + labels[:, None] * torch.tensor([0.0, 1.0])
    compute_metrics(logits[:10], labels[:10], 0.0)  # warm up
    t0 = time.perf_counter()
    compute_metrics(logits, labels, 0.0)
    assert time.perf_counter() - t0 < 1.0


def test_records_validate_against_the_api_schemas():
    """The epoch record and the test record (with its threshold) as the API reads them."""
    from api.schemas import EpochMetrics, TestMetrics

    scores, labels = CASES["hand_ties"]
    m = compute_metrics(logits_for_probs(scores), torch.tensor(labels), 0.7)
    epoch = EpochMetrics.from_record({
        **m.as_dict(), "epoch": 1, "step": 5, "train_loss": 0.8, "val_loss": m.loss, "lr": 1e-4,
        "train_samples_per_s": 10.0, "epoch_time_s": 1.0, "warnings": [], "is_best": True,
        "collapse_streak": 0})
    assert epoch.pr_auc == m.pr_auc and epoch.best_threshold == m.best_threshold
    test = TestMetrics.from_record({**m.as_dict(), "best_epoch": 1,
                                    "threshold": m.best_threshold,
                                    "at_threshold": at_threshold(m, m.best_threshold)})
    assert test.threshold == m.best_threshold and test.at_threshold is not None
    assert test.at_threshold.confusion_matrix.true_positive == at_threshold(
        m, m.best_threshold)["confusion_matrix"][1][1]
    one_class = compute_metrics(logits_for_probs([0.2, 0.7]), torch.tensor([0, 0]), 0.1)
    old = TestMetrics.from_record({**one_class.as_dict(), "best_epoch": None})
    assert old.pr_auc is None and old.threshold is None and old.at_threshold is None
