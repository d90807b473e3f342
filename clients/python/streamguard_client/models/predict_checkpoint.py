from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="PredictCheckpoint")


@_attrs_define
class PredictCheckpoint:
    """The checkpoint that answered.

    Attributes:
        epoch (int): The epoch the checkpoint was saved after.
        name (Literal['best']):
        sha256 (str): sha256 of the checkpoint's model archive (as listed by GET /v1/jobs/{id}/checkpoints).
    """

    epoch: int
    name: Literal["best"]
    sha256: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        epoch = self.epoch

        name = self.name

        sha256 = self.sha256

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "epoch": epoch,
                "name": name,
                "sha256": sha256,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        epoch = d.pop("epoch")

        name = cast(Literal["best"], d.pop("name"))
        if name != "best":
            raise ValueError(f"name must match const 'best', got '{name}'")

        sha256 = d.pop("sha256")

        predict_checkpoint = cls(
            epoch=epoch,
            name=name,
            sha256=sha256,
        )

        predict_checkpoint.additional_properties = d
        return predict_checkpoint

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
