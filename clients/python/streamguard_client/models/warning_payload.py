from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.prediction_distribution import PredictionDistribution


T = TypeVar("T", bound="WarningPayload")


@_attrs_define
class WarningPayload:
    """
    Attributes:
        epoch (int):
        message (str):
        prediction_distribution (PredictionDistribution): How many functions of the split each class was predicted for,
            and how many it has.
        step (int | None | Unset): The optimizer step of the evaluation.
    """

    epoch: int
    message: str
    prediction_distribution: PredictionDistribution
    step: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        epoch = self.epoch

        message = self.message

        prediction_distribution = self.prediction_distribution.to_dict()

        step: int | None | Unset
        if isinstance(self.step, Unset):
            step = UNSET
        else:
            step = self.step

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "epoch": epoch,
                "message": message,
                "prediction_distribution": prediction_distribution,
            }
        )
        if step is not UNSET:
            field_dict["step"] = step

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.prediction_distribution import PredictionDistribution  # noqa: PLC0415

        d = dict(src_dict)
        epoch = d.pop("epoch")

        message = d.pop("message")

        prediction_distribution = PredictionDistribution.from_dict(d.pop("prediction_distribution"))

        def _parse_step(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        step = _parse_step(d.pop("step", UNSET))

        warning_payload = cls(
            epoch=epoch,
            message=message,
            prediction_distribution=prediction_distribution,
            step=step,
        )

        warning_payload.additional_properties = d
        return warning_payload

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
