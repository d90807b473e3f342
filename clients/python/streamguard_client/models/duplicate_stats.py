from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="DuplicateStats")


@_attrs_define
class DuplicateStats:
    """
    Attributes:
        conflicting_groups (int): Duplicated functions with both labels.
        groups (int): Distinct duplicated functions.
        rows (int): Rows whose function text occurs more than once.
    """

    conflicting_groups: int
    groups: int
    rows: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        conflicting_groups = self.conflicting_groups

        groups = self.groups

        rows = self.rows

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "conflicting_groups": conflicting_groups,
                "groups": groups,
                "rows": rows,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        conflicting_groups = d.pop("conflicting_groups")

        groups = d.pop("groups")

        rows = d.pop("rows")

        duplicate_stats = cls(
            conflicting_groups=conflicting_groups,
            groups=groups,
            rows=rows,
        )

        duplicate_stats.additional_properties = d
        return duplicate_stats

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
