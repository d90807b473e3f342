from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.dataset_stats import DatasetStats


T = TypeVar("T", bound="DatasetRead")


@_attrs_define
class DatasetRead:
    """
    Attributes:
        created_at (datetime.datetime):
        id (str):
        name (str):
        sha256 (str):
        size_bytes (int):
        stats (DatasetStats):
    """

    created_at: datetime.datetime
    id: str
    name: str
    sha256: str
    size_bytes: int
    stats: DatasetStats
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        created_at = self.created_at.isoformat()

        id = self.id

        name = self.name

        sha256 = self.sha256

        size_bytes = self.size_bytes

        stats = self.stats.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "id": id,
                "name": name,
                "sha256": sha256,
                "size_bytes": size_bytes,
                "stats": stats,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.dataset_stats import DatasetStats  # noqa: PLC0415

        d = dict(src_dict)
        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        id = d.pop("id")

        name = d.pop("name")

        sha256 = d.pop("sha256")

        size_bytes = d.pop("size_bytes")

        stats = DatasetStats.from_dict(d.pop("stats"))

        dataset_read = cls(
            created_at=created_at,
            id=id,
            name=name,
            sha256=sha256,
            size_bytes=size_bytes,
            stats=stats,
        )

        dataset_read.additional_properties = d
        return dataset_read

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
