"""Stop decisions with reasons: the collapse guard and early stopping.

Collapse is an *outcome*, not an exception: the run ends with status `collapsed` (or
`not_learning`, when it never separated the classes) and a message saying which class vanished
and for how long. Exceptions are for bugs and infrastructure. `replay` runs stored evaluations
through a guard with other thresholds (`streamguard guard replay`); see docs/guard.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streamguard.training.metrics import LABELS, EvalMetrics


class StopReason(StrEnum):
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    COLLAPSED = "collapsed"
    NOT_LEARNING = "not_learning"  # never separated the classes after the guard's grace
    NON_FINITE_LOSS = "non_finite_loss"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # the host is going away: `last` holds the exact step to resume at


@dataclass(frozen=True)
class Decision:
    stop: bool = False
    reason: StopReason | None = None
    message: str = ""
    warnings: list[str] = field(default_factory=list)


class CollapseGuard:
    """Watches the per-class prediction counts of every evaluation, for both classes.

    A class is "below" when it is predicted less than `stop_ratio` of its actual count. Until
    an evaluation has had both classes at or above that line the model has not *separated* the
    classes yet, and one-class predictions mean it has not learned yet, not that it collapsed:

    * before `grace_steps` optimizer steps: a class below the line (zero predictions included)
      warns, `not_separating_yet` until the model has separated, and never stops (a model that
      has not learned yet, or flips between classes while the LR warms up, is the normal
      start); an evaluation in the grace that separates still counts as separated;
    * after the grace, never separated: `patience` evaluations in a row below the line stop
      the run `not_learning` (zero predictions count as below, they do not stop at once); a
      run that ends (or early-stops) without ever separating is `not_learning` too (`at_end`);
    * once separated (the incident's rules): zero predictions of a class stop `collapsed` at
      once; `patience` evaluations in a row below the line stop `collapsed`.

    A non-finite validation loss stops at once. The rules count evaluations (at epoch ends and
    every `eval_every_steps`), not epochs.

    Args:
        warn_ratio: warn when a class is predicted below this fraction of its actual count.
        stop_ratio: an evaluation with a class below this fraction counts towards `patience`.
        patience: stop after this many consecutive evaluations below `stop_ratio`.
        grace_steps: optimizer steps during which one-class predictions only warn.
    """

    state_key = "collapse_guard"

    def __init__(self, warn_ratio: float = 0.30, stop_ratio: float = 0.20,
                 patience: int = 3, grace_steps: int = 0) -> None:
        self.warn_ratio = warn_ratio
        self.stop_ratio = stop_ratio
        self.patience = patience
        self.grace_steps = grace_steps
        self.consecutive = 0
        self.separated = False  # an evaluation once had both classes above stop_ratio
        self.separated_at: int | None = None  # the optimizer step of the first such one
        self.last_passed = True

    def check_loss(self, loss: float, where: str) -> Decision:
        if math.isfinite(loss):
            return Decision()
        return Decision(True, StopReason.NON_FINITE_LOSS, f"{where} loss is {loss}: stopping")

    def evaluate(self, m: EvalMetrics, step: int | None = None) -> Decision:
        """One evaluation at optimizer `step` (None: past the grace)."""
        loss_decision = self.check_loss(m.loss, "validation")
        if loss_decision.stop:
            self.last_passed = False
            return loss_decision
        in_grace = step is not None and step < self.grace_steps
        warnings: list[str] = []
        below: list[tuple[float, str, int, int]] = []  # (ratio, label, predicted, actual)
        for cls, label in enumerate(LABELS):
            actual, predicted = m.actual[cls], m.predicted[cls]
            if actual == 0:
                continue
            ratio = predicted / actual
            if ratio < self.stop_ratio:
                below.append((ratio, label, predicted, actual))
            elif ratio < self.warn_ratio:
                warnings.append(f"class {label} predicted {predicted} times for {actual} actual "
                                f"({ratio:.0%} < warn {self.warn_ratio:.0%})")
        self.last_passed = not below
        if not below:
            self.consecutive = 0
            if not self.separated:
                self.separated, self.separated_at = True, step
            return Decision(warnings=warnings)
        ratio, label, predicted, actual = min(below)
        what = (f"no {label} predictions on {actual} {label} validation examples"
                if predicted == 0 else
                f"class {label} predicted {predicted} times for {actual} actual "
                f"({ratio:.0%} < stop {self.stop_ratio:.0%})")
        if in_grace:  # oscillating between classes while the LR warms up is normal
            prefix = "" if self.separated else "not_separating_yet: "
            warnings.append(f"{prefix}{what}; the guard's grace runs until step "
                            f"{self.grace_steps}, so this does not stop the run")
            return Decision(warnings=warnings)
        self.consecutive += 1
        if not self.separated:
            warnings.append(f"not_separating_yet: {what} ({self.consecutive} of "
                            f"{self.patience} evaluations after the grace)")
            if self.consecutive >= self.patience:
                ranks = ("" if m.roc_auc is None or m.roc_auc < 0.6 else
                         f" (ROC-AUC {m.roc_auc:.2f}: it ranks the functions better than "
                         "chance, but its 0.5 threshold still puts them in one class)")
                return Decision(True, StopReason.NOT_LEARNING,
                                f"not learning: {self.consecutive} evaluations in a row after "
                                f"the grace ({self.grace_steps} steps) had {what}{ranks}, and "
                                f"{self._never()}", warnings)
            return Decision(warnings=warnings)
        warnings.append(what)
        if predicted == 0:
            return Decision(True, StopReason.COLLAPSED,
                            f"{what}; the model predicts one class only (it had predicted both "
                            "classes before)", warnings)
        if self.consecutive >= self.patience:
            return Decision(True, StopReason.COLLAPSED,
                            f"class {label} predicted below {self.stop_ratio:.0%} of its actual "
                            f"count for {self.consecutive} consecutive evaluations (it had "
                            "predicted both classes before)", warnings)
        return Decision(warnings=warnings)

    def _never(self) -> str:
        return (f"no evaluation ever predicted both classes above {self.stop_ratio:.0%} of "
                "their counts. Try more steps, a higher LR for a from-scratch model, a "
                "pretrained model, or more data")

    def at_end(self) -> Decision:
        """The run ended (completed or early stopped): one that never separated the classes did
        not learn, even when fewer than `patience` evaluations came after the grace."""
        if self.separated:
            return Decision()
        return Decision(True, StopReason.NOT_LEARNING,
                        f"not learning: the run ended and {self._never()}")

    @property
    def healthy(self) -> bool:
        """Whether the last evaluation passed (used to pick the best checkpoint)."""
        return self.last_passed and self.consecutive == 0

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive, "separated": self.separated,
                "separated_at": self.separated_at, "last_passed": self.last_passed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consecutive = int(state["consecutive"])
        # A checkpoint from before the grace rules: treat its run as separated (old rules).
        self.separated = bool(state.get("separated", True))
        at = state.get("separated_at")
        self.separated_at = None if at is None else int(at)
        self.last_passed = bool(state.get("last_passed", self.consecutive == 0))


class EarlyStopping:
    """Stops after `patience` evaluations without improvement of a higher-is-better metric.

    Only evaluations that passed the collapse guard may become the best (an always-"vulnerable"
    model has F1 ~0.63 on Devign, which must never be selected).
    """

    state_key = "early_stopping"

    def __init__(self, metric: str = "f1", patience: int = 3, min_delta: float = 0.0) -> None:
        self.metric = metric
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0

    def evaluate(self, value: float | None, epoch: int, *, eligible: bool) -> tuple[bool, Decision]:
        """Returns (is_new_best, decision)."""
        improved = (eligible and value is not None and math.isfinite(value)
                    and (self.best is None or value > self.best + self.min_delta))
        if improved:
            self.best, self.best_epoch, self.wait = float(value), epoch, 0  # type: ignore[arg-type]
            return True, Decision()
        self.wait += 1
        if self.patience and self.wait >= self.patience:
            best = ("none yet" if self.best is None
                    else f"{self.best:.4f} at epoch {self.best_epoch}")
            return False, Decision(True, StopReason.EARLY_STOPPED,
                                   f"early stopped: val {self.metric} did not improve for "
                                   f"{self.wait} epoch(s) (best {best})")
        return False, Decision()

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.best_epoch = None if state["best_epoch"] is None else int(state["best_epoch"])
        self.wait = int(state["wait"])


def metrics_from_record(record: Mapping[str, Any]) -> EvalMetrics:
    """The counts and scores of a stored evaluation (an epoch or `evaluation` record)."""
    dist = record["prediction_distribution"]
    loss = record.get("val_loss", record.get("loss"))
    return EvalMetrics(
        loss=float("nan") if loss is None else float(loss),
        accuracy=float(record.get("accuracy", 0.0)), precision=float(record.get("precision", 0.0)),
        recall=float(record.get("recall", 0.0)), f1=float(record.get("f1", 0.0)),
        mcc=float(record.get("mcc", 0.0)), roc_auc=record.get("roc_auc"),
        confusion=confusion if isinstance(confusion := record.get("confusion_matrix"), list)
        else [[0, 0], [0, 0]],  # the API's records name the four cells instead
        predicted=[int(dist["predicted_safe"]), int(dist["predicted_vulnerable"])],
        actual=[int(dist["actual_safe"]), int(dist["actual_vulnerable"])])


def replay(records: Iterable[Mapping[str, Any]], guard: CollapseGuard
           ) -> list[tuple[Mapping[str, Any], Decision]]:
    """Every stored evaluation (in order, each with its `step`) through `guard`: its decision.

    The guard keeps going after a stop, so the caller sees every place a rule fires; the first
    decision that stops is where a run with these thresholds would have ended.
    """
    return [(r, guard.evaluate(metrics_from_record(r), int(r["step"]))) for r in records]
