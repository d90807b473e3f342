from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="RollbackPayload")


@_attrs_define
class RollbackPayload:
    """The guard saw a collapse and, with `on_collapse: rollback`, went back to the best passing
    checkpoint with a lower learning rate instead of stopping.

        Attributes:
            epoch (int): The epoch of the evaluation that collapsed.
            lr_factor (float): The learning rate is now multiplied by this (every rollback so far, compounded).
            max_rollbacks (int):
            reason (str): Why: the guard's collapse message.
            rollback (int): This run's rollback count, this one included.
            step (int): Its optimizer step.
            to_epoch (int): The epoch of the checkpoint restored.
            to_step (int): The optimizer step training continues from.
    """

    epoch: int
    lr_factor: float
    max_rollbacks: int
    reason: str
    rollback: int
    step: int
    to_epoch: int
    to_step: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        epoch = self.epoch

        lr_factor = self.lr_factor

        max_rollbacks = self.max_rollbacks

        reason = self.reason

        rollback = self.rollback

        step = self.step

        to_epoch = self.to_epoch

        to_step = self.to_step

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "epoch": epoch,
                "lr_factor": lr_factor,
                "max_rollbacks": max_rollbacks,
                "reason": reason,
                "rollback": rollback,
                "step": step,
                "to_epoch": to_epoch,
                "to_step": to_step,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        epoch = d.pop("epoch")

        lr_factor = d.pop("lr_factor")

        max_rollbacks = d.pop("max_rollbacks")

        reason = d.pop("reason")

        rollback = d.pop("rollback")

        step = d.pop("step")

        to_epoch = d.pop("to_epoch")

        to_step = d.pop("to_step")

        rollback_payload = cls(
            epoch=epoch,
            lr_factor=lr_factor,
            max_rollbacks=max_rollbacks,
            reason=reason,
            rollback=rollback,
            step=step,
            to_epoch=to_epoch,
            to_step=to_step,
        )

        rollback_payload.additional_properties = d
        return rollback_payload

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
