from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="ConfusionMatrix")


@_attrs_define
class ConfusionMatrix:
    """Counts with "vulnerable" as the positive class.

    Attributes:
        false_negative (int): Vulnerable, predicted safe.
        false_positive (int): Safe, predicted vulnerable.
        true_negative (int): Safe, predicted safe.
        true_positive (int): Vulnerable, predicted vulnerable.
    """

    false_negative: int
    false_positive: int
    true_negative: int
    true_positive: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        false_negative = self.false_negative

        false_positive = self.false_positive

        true_negative = self.true_negative

        true_positive = self.true_positive

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "false_negative": false_negative,
                "false_positive": false_positive,
                "true_negative": true_negative,
                "true_positive": true_positive,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        false_negative = d.pop("false_negative")

        false_positive = d.pop("false_positive")

        true_negative = d.pop("true_negative")

        true_positive = d.pop("true_positive")

        confusion_matrix = cls(
            false_negative=false_negative,
            false_positive=false_positive,
            true_negative=true_negative,
            true_positive=true_positive,
        )

        confusion_matrix.additional_properties = d
        return confusion_matrix

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
