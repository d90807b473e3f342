from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.step_metric_read import StepMetricRead


T = TypeVar("T", bound="StepMetricPage")


@_attrs_define
class StepMetricPage:
    """
    Attributes:
        items (list[StepMetricRead]):
        next_after_step (int | None): Pass as `after_step` for the next page; null on the last page.
    """

    items: list[StepMetricRead]
    next_after_step: int | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        items = []
        for items_item_data in self.items:
            items_item = items_item_data.to_dict()
            items.append(items_item)

        next_after_step: int | None
        next_after_step = self.next_after_step

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "items": items,
                "next_after_step": next_after_step,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.step_metric_read import StepMetricRead  # noqa: PLC0415

        d = dict(src_dict)
        items = []
        _items = d.pop("items")
        for items_item_data in _items:
            items_item = StepMetricRead.from_dict(items_item_data)

            items.append(items_item)

        def _parse_next_after_step(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        next_after_step = _parse_next_after_step(d.pop("next_after_step"))

        step_metric_page = cls(
            items=items,
            next_after_step=next_after_step,
        )

        step_metric_page.additional_properties = d
        return step_metric_page

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
