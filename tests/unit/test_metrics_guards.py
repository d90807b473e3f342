"""Metrics on hand-made predictions, and guard decisions on scripted distributions."""

import pytest
import torch

from streamguard.training.guards import CollapseGuard, EarlyStopping, StopReason
from streamguard.training.metrics import EvalMetrics, compute_metrics, roc_auc


def logits_for(preds):
    return torch.tensor([[1.0, 0.0] if p == 0 else [0.0, 1.0] for p in preds])


def test_compute_metrics_by_hand():
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 1])
    preds = [1, 1, 0, 0, 0, 1, 0, 1]  # tp=3 fn=1 fp=1 tn=3
    m = compute_metrics(logits_for(preds), labels, loss=0.5)
    assert m.confusion == [[3, 1], [1, 3]]
    assert (m.accuracy, m.precision, m.recall, m.f1) == (0.75, 0.75, 0.75, 0.75)
    assert m.mcc == pytest.approx(0.5)
    assert m.pred_distribution == {"predicted_vulnerable": 4, "predicted_safe": 4,
                                   "actual_vulnerable": 4, "actual_safe": 4}


def test_single_class_predictions_give_zero_f1_and_no_nan():
    labels = torch.tensor([1, 0, 0, 0])
    m = compute_metrics(logits_for([0, 0, 0, 0]), labels, loss=0.1)
    assert m.f1 == 0.0 and m.precision == 0.0 and m.mcc == 0.0
    assert m.predicted == [4, 0]


def test_roc_auc_with_ties_matches_pairwise_count():
    scores = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.4])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # pairs (pos, neg): 0.35>0.1 yes, 0.35<0.4 no, 0.8 beats both, 0.4 vs 0.1 yes, 0.4=0.4 half
    assert roc_auc(scores, labels) == pytest.approx((1 + 0 + 2 + 1 + 0.5) / 6)
    assert roc_auc(scores, torch.zeros(5, dtype=torch.long)) is None


def dist(pred_vuln, pred_safe, actual_vuln=50, actual_safe=50, loss=0.6):
    return EvalMetrics(loss=loss, accuracy=0.5, precision=0.5, recall=0.5, f1=0.5, mcc=0.0,
                       roc_auc=0.5, confusion=[[0, 0], [0, 0]],
                       predicted=[pred_safe, pred_vuln], actual=[actual_safe, actual_vuln])


# The incident's rules apply once the model has separated the classes (an evaluation with both
# above the stop ratio): each collapse sequence starts with one. Without it the same sequences
# are `not_learning` (tests/unit/test_guard_rules.py).
@pytest.mark.parametrize(("sequence", "stop_at", "reason"), [
    ([(50, 50), (0, 100)], 2, StopReason.COLLAPSED),               # no vulnerable predictions
    ([(50, 50), (100, 0)], 2, StopReason.COLLAPSED),               # no safe predictions
    ([(50, 50), (8, 92), (8, 92), (8, 92)], 4, StopReason.COLLAPSED),  # 16 % < 20 % three times
    ([(50, 50), (8, 92), (8, 92), (40, 60), (8, 92), (8, 92)], None, None),  # streak reset
    ([(50, 50), (92, 8), (92, 8), (92, 8)], 4, StopReason.COLLAPSED),  # safe class vanishing
    ([(0, 100)] * 3, 3, StopReason.NOT_LEARNING),                  # never separated
    ([(50, 50)] * 5, None, None),
])
def test_collapse_guard_scripted(sequence, stop_at, reason):
    guard = CollapseGuard(0.30, 0.20, 3)
    stopped = None
    for epoch, (pv, ps) in enumerate(sequence, start=1):
        d = guard.evaluate(dist(pv, ps))
        if d.stop:
            stopped = (epoch, d.reason)
            break
    assert stopped == ((stop_at, reason) if stop_at else None)


def test_collapse_guard_warns_between_thresholds_without_stopping():
    guard = CollapseGuard(0.30, 0.20, 3)
    for _ in range(5):
        d = guard.evaluate(dist(12, 88))  # 24 %: warn, not stop
        assert not d.stop and len(d.warnings) == 1 and "vulnerable" in d.warnings[0]
    assert guard.healthy


def test_collapse_guard_non_finite_loss():
    d = CollapseGuard().evaluate(dist(50, 50, loss=float("nan")))
    assert d.stop and d.reason == StopReason.NON_FINITE_LOSS


def test_collapse_guard_state_round_trip():
    a = CollapseGuard()
    a.evaluate(dist(50, 50))
    a.evaluate(dist(8, 92))
    a.evaluate(dist(8, 92))
    b = CollapseGuard()
    b.load_state_dict(a.state_dict())
    assert b.evaluate(dist(8, 92)).reason == StopReason.COLLAPSED


def test_early_stopping_patience_and_eligibility():
    es = EarlyStopping("f1", patience=2)
    assert es.evaluate(0.5, 1, eligible=True)[0]
    assert not es.evaluate(0.9, 2, eligible=False)[0]  # collapsed epochs never become best
    is_best, d = es.evaluate(0.4, 3, eligible=True)
    assert not is_best and d.stop and d.reason == StopReason.EARLY_STOPPED
    assert es.best == 0.5 and es.best_epoch == 1
    clone = EarlyStopping("f1", patience=2)
    clone.load_state_dict(es.state_dict())
    assert clone.state_dict() == es.state_dict()
