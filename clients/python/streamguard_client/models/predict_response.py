from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.predict_checkpoint import PredictCheckpoint
    from ..models.predict_item import PredictItem


T = TypeVar("T", bound="PredictResponse")


@_attrs_define
class PredictResponse:
    """The predictions of one request, and the checkpoint and threshold that made them.

    Attributes:
        checkpoint (PredictCheckpoint): The checkpoint that answered.
        items (list[PredictItem]):
        job_id (str): The job whose best checkpoint answered.
        threshold (float): The decision threshold of the model (0.5 unless the model names one).
    """

    checkpoint: PredictCheckpoint
    items: list[PredictItem]
    job_id: str
    threshold: float
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        checkpoint = self.checkpoint.to_dict()

        items = []
        for items_item_data in self.items:
            items_item = items_item_data.to_dict()
            items.append(items_item)

        job_id = self.job_id

        threshold = self.threshold

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "checkpoint": checkpoint,
                "items": items,
                "job_id": job_id,
                "threshold": threshold,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.predict_checkpoint import PredictCheckpoint  # noqa: PLC0415
        from ..models.predict_item import PredictItem  # noqa: PLC0415

        d = dict(src_dict)
        checkpoint = PredictCheckpoint.from_dict(d.pop("checkpoint"))

        items = []
        _items = d.pop("items")
        for items_item_data in _items:
            items_item = PredictItem.from_dict(items_item_data)

            items.append(items_item)

        job_id = d.pop("job_id")

        threshold = d.pop("threshold")

        predict_response = cls(
            checkpoint=checkpoint,
            items=items,
            job_id=job_id,
            threshold=threshold,
        )

        predict_response.additional_properties = d
        return predict_response

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
