from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.warning_payload import WarningPayload


T = TypeVar("T", bound="WarningEvent")


@_attrs_define
class WarningEvent:
    """
    Attributes:
        created_at (datetime.datetime):
        data (WarningPayload): A collapse-guard warning (`source: guard`, with the evaluation's prediction
            distribution), or an experiment tracker that failed and is off for the rest of the run
            (`source: tracker`; the job trains on).
        id (int): The event id; the SSE `id:` line (send it back as Last-Event-ID).
        kind (Literal['warning']):
    """

    created_at: datetime.datetime
    data: WarningPayload
    id: int
    kind: Literal["warning"]
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        created_at = self.created_at.isoformat()

        data = self.data.to_dict()

        id = self.id

        kind = self.kind

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "data": data,
                "id": id,
                "kind": kind,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.warning_payload import WarningPayload  # noqa: PLC0415

        d = dict(src_dict)
        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        data = WarningPayload.from_dict(d.pop("data"))

        id = d.pop("id")

        kind = cast(Literal["warning"], d.pop("kind"))
        if kind != "warning":
            raise ValueError(f"kind must match const 'warning', got '{kind}'")

        warning_event = cls(
            created_at=created_at,
            data=data,
            id=id,
            kind=kind,
        )

        warning_event.additional_properties = d
        return warning_event

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
