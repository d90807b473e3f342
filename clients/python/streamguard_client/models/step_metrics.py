from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="StepMetrics")


@_attrs_define
class StepMetrics:
    """Training metrics at one optimizer step (every `log_every_steps` steps and at the end of
    each epoch), as stored and as streamed in `step` events.

        Attributes:
            epoch (int): The epoch in progress (1-based).
            epoch_progress (float): Fraction of the epoch's batches done.
            grad_norm (float | None): Gradient norm before clipping; null when an fp16 overflow skipped the step.
            lr (float): Learning rate after this step.
            samples_per_s (float): Training throughput since the previous point.
            step (int): Optimizer steps so far.
            total_steps (int): Optimizer steps of the whole run.
            train_loss (float): Mean training loss over the steps since the previous point.
            replayed (bool | Unset): An earlier attempt had recorded this step; this attempt resumed from an earlier
                checkpoint and ran it again. These values replace the earlier ones. Default: False.
    """

    epoch: int
    epoch_progress: float
    grad_norm: float | None
    lr: float
    samples_per_s: float
    step: int
    total_steps: int
    train_loss: float
    replayed: bool | Unset = False
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        epoch = self.epoch

        epoch_progress = self.epoch_progress

        grad_norm: float | None
        grad_norm = self.grad_norm

        lr = self.lr

        samples_per_s = self.samples_per_s

        step = self.step

        total_steps = self.total_steps

        train_loss = self.train_loss

        replayed = self.replayed

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "epoch": epoch,
                "epoch_progress": epoch_progress,
                "grad_norm": grad_norm,
                "lr": lr,
                "samples_per_s": samples_per_s,
                "step": step,
                "total_steps": total_steps,
                "train_loss": train_loss,
            }
        )
        if replayed is not UNSET:
            field_dict["replayed"] = replayed

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        epoch = d.pop("epoch")

        epoch_progress = d.pop("epoch_progress")

        def _parse_grad_norm(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        grad_norm = _parse_grad_norm(d.pop("grad_norm"))

        lr = d.pop("lr")

        samples_per_s = d.pop("samples_per_s")

        step = d.pop("step")

        total_steps = d.pop("total_steps")

        train_loss = d.pop("train_loss")

        replayed = d.pop("replayed", UNSET)

        step_metrics = cls(
            epoch=epoch,
            epoch_progress=epoch_progress,
            grad_norm=grad_norm,
            lr=lr,
            samples_per_s=samples_per_s,
            step=step,
            total_steps=total_steps,
            train_loss=train_loss,
            replayed=replayed,
        )

        step_metrics.additional_properties = d
        return step_metrics

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
