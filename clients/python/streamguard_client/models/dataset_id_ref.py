from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="DatasetIdRef")


@_attrs_define
class DatasetIdRef:
    """A dataset uploaded with POST /v1/datasets.

    Attributes:
        dataset_id (str): An id as the API hands it out (32 hex characters).
    """

    dataset_id: str

    def to_dict(self) -> dict[str, Any]:
        dataset_id = self.dataset_id

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "dataset_id": dataset_id,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        dataset_id = d.pop("dataset_id")

        dataset_id_ref = cls(
            dataset_id=dataset_id,
        )

        return dataset_id_ref
