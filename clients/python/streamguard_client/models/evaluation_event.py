from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.evaluation_metrics import EvaluationMetrics


T = TypeVar("T", bound="EvaluationEvent")


@_attrs_define
class EvaluationEvent:
    """
    Attributes:
        created_at (datetime.datetime):
        data (EvaluationMetrics): A validation evaluation inside an epoch (`config.eval_every_steps`), as streamed in
            `evaluation` events; the evaluation at each epoch's end is the `epoch` record.
        id (int): The event id; the SSE `id:` line (send it back as Last-Event-ID).
        kind (Literal['evaluation']):
    """

    created_at: datetime.datetime
    data: EvaluationMetrics
    id: int
    kind: Literal["evaluation"]
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
        from ..models.evaluation_metrics import EvaluationMetrics  # noqa: PLC0415

        d = dict(src_dict)
        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        data = EvaluationMetrics.from_dict(d.pop("data"))

        id = d.pop("id")

        kind = cast(Literal["evaluation"], d.pop("kind"))
        if kind != "evaluation":
            raise ValueError(f"kind must match const 'evaluation', got '{kind}'")

        evaluation_event = cls(
            created_at=created_at,
            data=data,
            id=id,
            kind=kind,
        )

        evaluation_event.additional_properties = d
        return evaluation_event

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
