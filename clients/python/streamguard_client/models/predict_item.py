from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.predict_item_label_name import PredictItemLabelName

T = TypeVar("T", bound="PredictItem")


@_attrs_define
class PredictItem:
    """One function's prediction, in request order.

    Attributes:
        label (int): 1 (vulnerable) when probability >= threshold.
        label_name (PredictItemLabelName):
        probability (float): Softmax probability of "vulnerable".
    """

    label: int
    label_name: PredictItemLabelName
    probability: float
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        label = self.label

        label_name = self.label_name.value

        probability = self.probability

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "label": label,
                "label_name": label_name,
                "probability": probability,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        label = d.pop("label")

        label_name = PredictItemLabelName(d.pop("label_name"))

        probability = d.pop("probability")

        predict_item = cls(
            label=label,
            label_name=label_name,
            probability=probability,
        )

        predict_item.additional_properties = d
        return predict_item

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
