from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.checkpoint_payload_name import CheckpointPayloadName
from ..types import UNSET, Unset

T = TypeVar("T", bound="CheckpointPayload")


@_attrs_define
class CheckpointPayload:
    """
    Attributes:
        epoch (int):
        name (CheckpointPayloadName):
        sha256 (str):
        size_bytes (int):
        step (int | None | Unset): Set for a mid-epoch `last` (see CheckpointRead).
    """

    epoch: int
    name: CheckpointPayloadName
    sha256: str
    size_bytes: int
    step: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        epoch = self.epoch

        name = self.name.value

        sha256 = self.sha256

        size_bytes = self.size_bytes

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
                "name": name,
                "sha256": sha256,
                "size_bytes": size_bytes,
            }
        )
        if step is not UNSET:
            field_dict["step"] = step

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        epoch = d.pop("epoch")

        name = CheckpointPayloadName(d.pop("name"))

        sha256 = d.pop("sha256")

        size_bytes = d.pop("size_bytes")

        def _parse_step(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        step = _parse_step(d.pop("step", UNSET))

        checkpoint_payload = cls(
            epoch=epoch,
            name=name,
            sha256=sha256,
            size_bytes=size_bytes,
            step=step,
        )

        checkpoint_payload.additional_properties = d
        return checkpoint_payload

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
