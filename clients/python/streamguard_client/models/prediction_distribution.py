from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="PredictionDistribution")


@_attrs_define
class PredictionDistribution:
    """How many functions of the split each class was predicted for, and how many it has.

    Attributes:
        actual_safe (int):
        actual_vulnerable (int):
        predicted_safe (int):
        predicted_vulnerable (int):
    """

    actual_safe: int
    actual_vulnerable: int
    predicted_safe: int
    predicted_vulnerable: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        actual_safe = self.actual_safe

        actual_vulnerable = self.actual_vulnerable

        predicted_safe = self.predicted_safe

        predicted_vulnerable = self.predicted_vulnerable

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "actual_safe": actual_safe,
                "actual_vulnerable": actual_vulnerable,
                "predicted_safe": predicted_safe,
                "predicted_vulnerable": predicted_vulnerable,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        actual_safe = d.pop("actual_safe")

        actual_vulnerable = d.pop("actual_vulnerable")

        predicted_safe = d.pop("predicted_safe")

        predicted_vulnerable = d.pop("predicted_vulnerable")

        prediction_distribution = cls(
            actual_safe=actual_safe,
            actual_vulnerable=actual_vulnerable,
            predicted_safe=predicted_safe,
            predicted_vulnerable=predicted_vulnerable,
        )

        prediction_distribution.additional_properties = d
        return prediction_distribution

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
