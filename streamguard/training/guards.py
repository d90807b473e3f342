"""Stop decisions with reasons: the collapse guard and early stopping.

Collapse is an *outcome*, not an exception: the run ends with status `collapsed` and a message
saying which class vanished and for how long. Exceptions are for bugs and infrastructure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from streamguard.training.metrics import LABELS, EvalMetrics


class StopReason(StrEnum):
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    COLLAPSED = "collapsed"
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

    Args:
        warn_ratio: warn when a class is predicted below this fraction of its actual count.
        stop_ratio: count an epoch as "collapsing" when a class is below this fraction.
        patience: stop after this many consecutive collapsing epochs.
    Zero predictions of a class that is present stops at once; so does a non-finite loss.
    """

    state_key = "collapse_guard"

    def __init__(self, warn_ratio: float = 0.30, stop_ratio: float = 0.20,
                 patience: int = 3) -> None:
        self.warn_ratio = warn_ratio
        self.stop_ratio = stop_ratio
        self.patience = patience
        self.consecutive = 0

    def check_loss(self, loss: float, where: str) -> Decision:
        if math.isfinite(loss):
            return Decision()
        return Decision(True, StopReason.NON_FINITE_LOSS, f"{where} loss is {loss}: stopping")

    def evaluate(self, m: EvalMetrics) -> Decision:
        loss_decision = self.check_loss(m.loss, "validation")
        if loss_decision.stop:
            return loss_decision
        warnings: list[str] = []
        worst_ratio = math.inf
        worst_label = ""
        for cls, label in enumerate(LABELS):
            actual, predicted = m.actual[cls], m.predicted[cls]
            if actual == 0:
                continue
            ratio = predicted / actual
            if predicted == 0:
                self.consecutive += 1
                return Decision(True, StopReason.COLLAPSED,
                                f"no {label} predictions on {actual} {label} "
                                f"validation examples; the model predicts one class only")
            if ratio < self.warn_ratio:
                warnings.append(f"class {label} predicted {predicted} times for {actual} actual "
                                f"({ratio:.0%} < warn {self.warn_ratio:.0%})")
            if ratio < worst_ratio:
                worst_ratio, worst_label = ratio, label
        if worst_ratio < self.stop_ratio:
            self.consecutive += 1
            if self.consecutive >= self.patience:
                return Decision(True, StopReason.COLLAPSED,
                                f"class {worst_label} predicted below "
                                f"{self.stop_ratio:.0%} of its actual count for "
                                f"{self.consecutive} consecutive epochs", warnings)
        else:
            self.consecutive = 0
        return Decision(warnings=warnings)

    @property
    def healthy(self) -> bool:
        """Whether the last evaluation passed (used to pick the best checkpoint)."""
        return self.consecutive == 0

    def state_dict(self) -> dict[str, Any]:
        return {"consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consecutive = int(state["consecutive"])


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
