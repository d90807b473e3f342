"""The guard's grace and its two outcomes on scripted evaluation histories (each with its step).

`not_learning`: the model never predicted both classes above the stop ratio; `collapsed`: it
did, then lost a class. Before the grace ends, one-class predictions only warn.
"""

from __future__ import annotations

import pytest
import torch

from streamguard.training.guards import CollapseGuard, StopReason, metrics_from_record, replay
from streamguard.training.metrics import EvalMetrics, compute_metrics


def dist(pred_vuln: int, pred_safe: int, actual_vuln: int = 50, actual_safe: int = 50
         ) -> EvalMetrics:
    return EvalMetrics(loss=0.69, accuracy=0.5, precision=0.5, recall=0.5, f1=0.5, mcc=0.0,
                       roc_auc=0.6, confusion=[[0, 0], [0, 0]],
                       predicted=[pred_safe, pred_vuln], actual=[actual_safe, actual_vuln])


def run_guard(guard: CollapseGuard, history: list[tuple[int, EvalMetrics]]):
    """(index of the first stop or None, its decision or None, every decision)."""
    decisions = [guard.evaluate(m, step) for step, m in history]
    first = next((i for i, d in enumerate(decisions) if d.stop), None)
    return first, (decisions[first] if first is not None else None), decisions


def test_grace_warns_not_separating_yet_and_never_stops():
    guard = CollapseGuard(0.30, 0.20, 3, grace_steps=100)
    history = [(step, dist(0, 100)) for step in (20, 40, 60, 80, 99)]  # all "safe", zero vuln
    first, _, decisions = run_guard(guard, history)
    assert first is None
    for d in decisions:
        assert len(d.warnings) == 1 and d.warnings[0].startswith("not_separating_yet: no "
                                                                 "vulnerable predictions")
    assert guard.consecutive == 0 and not guard.separated and not guard.healthy


def test_not_learning_after_the_grace_with_what_to_try():
    guard = CollapseGuard(0.30, 0.20, 3, grace_steps=100)
    history = [(step, dist(0, 100)) for step in (50, 100, 150, 200, 250)]
    first, stop, decisions = run_guard(guard, history)
    assert first == 3 and stop is not None and stop.reason == StopReason.NOT_LEARNING
    assert [d.stop for d in decisions[1:3]] == [False, False]  # 1 and 2 of 3 after the grace
    for hint in ("more steps", "higher LR", "pretrained model", "more data"):
        assert hint in stop.message, stop.message
    assert "no vulnerable predictions" in stop.message


def test_collapsed_only_after_both_classes_were_once_above_the_stop_ratio():
    guard = CollapseGuard(0.30, 0.20, 3, grace_steps=0)
    # 16 % vulnerable twice (not learning yet, 2 of 3), then separated, then 16 % three times.
    history = [(10, dist(8, 92)), (20, dist(8, 92)), (30, dist(40, 60)),
               (40, dist(8, 92)), (50, dist(8, 92)), (60, dist(8, 92))]
    first, stop, decisions = run_guard(guard, history)
    assert decisions[2].warnings == [] and guard.separated_at == 30
    assert first == 5 and stop is not None and stop.reason == StopReason.COLLAPSED
    assert "3 consecutive evaluations" in stop.message


def test_zero_predictions_stop_at_once_only_after_separating():
    never = CollapseGuard(0.30, 0.20, 3, grace_steps=0)
    assert not never.evaluate(dist(0, 100), 10).stop  # not learning yet: counts, no stop
    once = CollapseGuard(0.30, 0.20, 3, grace_steps=100)
    assert not once.evaluate(dist(45, 55), 10).stop  # separated inside the grace
    d = once.evaluate(dist(0, 100), 20)  # inside the grace: a warning, no stop
    assert not d.stop and "no vulnerable predictions" in d.warnings[0]
    assert not d.warnings[0].startswith("not_separating_yet") and once.separated_at == 10
    d = once.evaluate(dist(0, 100), 100)  # the grace is over: the incident's rule
    assert d.stop and d.reason == StopReason.COLLAPSED and "one class only" in d.message


def incident_eval(pred_vuln: int, tp: int, actual_vuln: int = 1255, actual_safe: int = 1477
                  ) -> EvalMetrics:
    """Devign validation-sized counts: `pred_vuln` predicted vulnerable, `tp` of them right."""
    labels = torch.tensor([1] * actual_vuln + [0] * actual_safe)
    preds = torch.tensor([1] * tp + [0] * (actual_vuln - tp)
                         + [1] * (pred_vuln - tp) + [0] * (actual_safe - pred_vuln + tp))
    logits = torch.stack([1 - preds.float(), preds.float()], dim=1)
    return compute_metrics(logits, labels, loss=0.7)


def test_regression_incident_f1_history_still_stops_collapsed():
    # F1 0.43, 0.11, 0.00, 0.00 as the prediction distribution drifts to all-safe; warmup (the
    # grace) ended inside epoch 1, evaluations at each epoch's end (1,000 steps an epoch).
    history = [(1000, incident_eval(900, 463)), (2000, incident_eval(100, 75)),
               (3000, incident_eval(0, 0)), (4000, incident_eval(0, 0))]
    assert [round(m.f1, 2) for _, m in history] == [0.43, 0.11, 0.0, 0.0]
    guard = CollapseGuard(0.30, 0.20, 3, grace_steps=300)
    first, stop, decisions = run_guard(guard, history)
    assert first == 2 and stop is not None and stop.reason == StopReason.COLLAPSED
    assert "no vulnerable predictions on 1255" in stop.message
    assert any("8% < stop 20%" in w for w in decisions[1].warnings)


def test_guard_state_round_trip_keeps_separation():
    a = CollapseGuard(0.30, 0.20, 3, grace_steps=0)
    a.evaluate(dist(50, 50), 10)
    a.evaluate(dist(8, 92), 20)
    b = CollapseGuard(0.30, 0.20, 3, grace_steps=0)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() and b.separated
    assert b.evaluate(dist(0, 100), 30).reason == StopReason.COLLAPSED
    old = CollapseGuard()
    old.load_state_dict({"consecutive": 1})  # a checkpoint written before these rules
    assert old.separated and old.consecutive == 1


def record(step: int, pred_vuln: int, pred_safe: int) -> dict:
    return {"epoch": 1, "step": step, "val_loss": 0.69, "f1": 0.4,
            "prediction_distribution": {"predicted_vulnerable": pred_vuln,
                                        "predicted_safe": pred_safe,
                                        "actual_vulnerable": 50, "actual_safe": 50}}


def test_replay_with_other_thresholds():
    history = [record(10, 0, 100), record(20, 45, 55), record(30, 12, 88), record(40, 12, 88),
               record(50, 12, 88)]
    assert metrics_from_record(history[1]).predicted == [55, 45]
    default = replay(history, CollapseGuard(0.30, 0.20, 3, grace_steps=15))
    assert not any(d.stop for _, d in default)  # 24 %: warn only
    stricter = replay(history, CollapseGuard(0.30, 0.25, 3, grace_steps=15))
    assert [d.reason for _, d in stricter if d.stop] == [StopReason.COLLAPSED]
    assert stricter[4][0]["step"] == 50 and stricter[4][1].stop
    no_grace = replay(history[:1] * 3, CollapseGuard(0.30, 0.20, 3, grace_steps=0))
    assert no_grace[2][1].reason == StopReason.NOT_LEARNING


@pytest.mark.parametrize("loss", [float("nan"), None])
def test_replay_non_finite_loss(loss):
    rec = {**record(10, 50, 50), "val_loss": loss}
    assert replay([rec], CollapseGuard())[0][1].reason == StopReason.NON_FINITE_LOSS


def test_a_run_that_ends_without_ever_separating_is_not_learning():
    guard = CollapseGuard(0.30, 0.20, 3, grace_steps=10)
    for step in (63, 126):  # two epochs: fewer evaluations after the grace than the patience
        assert not guard.evaluate(dist(0, 100), step).stop
    end = guard.at_end()
    assert end.stop and end.reason == StopReason.NOT_LEARNING
    assert end.message.startswith("not learning: the run ended and no evaluation ever "
                                  "predicted both classes above 20%")
    guard.evaluate(dist(45, 55), 189)
    assert not guard.at_end().stop


def test_not_learning_says_when_the_model_ranks_but_its_threshold_does_not_separate():
    guard = CollapseGuard(0.30, 0.20, 1, grace_steps=0)
    ranked = EvalMetrics(**{**dist(0, 100).__dict__, "roc_auc": 0.63})
    d = guard.evaluate(ranked, 10)
    assert d.reason == StopReason.NOT_LEARNING and "(ROC-AUC 0.63: it ranks" in d.message
