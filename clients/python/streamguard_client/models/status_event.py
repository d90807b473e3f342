from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.status_payload import StatusPayload


T = TypeVar("T", bound="StatusEvent")


@_attrs_define
class StatusEvent:
    """
    Attributes:
        created_at (datetime.datetime):
        data (StatusPayload):
        id (int): The event id; the SSE `id:` line (send it back as Last-Event-ID).
        kind (Literal['status']):
    """

    created_at: datetime.datetime
    data: StatusPayload
    id: int
    kind: Literal["status"]
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
        from ..models.status_payload import StatusPayload  # noqa: PLC0415

        d = dict(src_dict)
        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        data = StatusPayload.from_dict(d.pop("data"))

        id = d.pop("id")

        kind = cast(Literal["status"], d.pop("kind"))
        if kind != "status":
            raise ValueError(f"kind must match const 'status', got '{kind}'")

        status_event = cls(
            created_at=created_at,
            data=data,
            id=id,
            kind=kind,
        )

        status_event.additional_properties = d
        return status_event

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
