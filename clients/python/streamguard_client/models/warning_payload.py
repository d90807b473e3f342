from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

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
    """

    epoch: int
    message: str
    prediction_distribution: PredictionDistribution
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        epoch = self.epoch

        message = self.message

        prediction_distribution = self.prediction_distribution.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "epoch": epoch,
                "message": message,
                "prediction_distribution": prediction_distribution,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.prediction_distribution import PredictionDistribution  # noqa: PLC0415

        d = dict(src_dict)
        epoch = d.pop("epoch")

        message = d.pop("message")

        prediction_distribution = PredictionDistribution.from_dict(d.pop("prediction_distribution"))

        warning_payload = cls(
            epoch=epoch,
            message=message,
            prediction_distribution=prediction_distribution,
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
