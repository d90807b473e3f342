"""Callbacks: a no-op base with fixed call points. A callback stops a run by returning a
Decision from `on_step_end`/`on_epoch_end`; it never raises into the loop's arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streamguard.training.guards import Decision, StopReason


class Callback:
    """Base class; every hook is a no-op."""

    state_key: str = ""

    def on_train_start(self, info: dict[str, Any]) -> None:
        """Called once, after the banner, before the first step."""

    def on_step_end(self, step: int) -> Decision | None:
        """Called after every optimizer step (`step` counts optimizer steps)."""
        return None

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> Decision | None:
        """Called after each evaluation with that epoch's record."""
        return None

    def on_train_end(self, outcome: str) -> None:
        """Called once with the run's outcome."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned."""


class CancelOnRequest(Callback):
    """Polls `should_cancel()` every `every_n_steps` optimizer steps and at each epoch end.

    The poll may read a database row, so it is not done on every step.
    """

    def __init__(self, should_cancel: Callable[[], bool], every_n_steps: int = 10) -> None:
        self.should_cancel = should_cancel
        self.every_n_steps = max(1, every_n_steps)

    def _check(self) -> Decision | None:
        if self.should_cancel():
            return Decision(True, StopReason.CANCELLED, "cancelled on request")
        return None

    def on_train_start(self, info: dict[str, Any]) -> None:
        pass

    def on_step_end(self, step: int) -> Decision | None:
        return self._check() if step % self.every_n_steps == 0 else None

    def on_epoch_end(self, epoch: int, record: dict[str, Any]) -> Decision | None:
        return self._check()
