from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.checkpoint_read_name import CheckpointReadName
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.epoch_metrics import EpochMetrics


T = TypeVar("T", bound="CheckpointRead")


@_attrs_define
class CheckpointRead:
    """
    Attributes:
        epoch (int): The epoch it was saved in (the last completed one for an end-of-epoch checkpoint).
        metrics (EpochMetrics | None): The epoch's validation record; null for a mid-epoch checkpoint (not evaluated).
        name (CheckpointReadName):
        sha256 (str): sha256 of the model archive.
        size_bytes (int): Size of the model archive (.tar.gz).
        updated_at (datetime.datetime):
        step (int | None | Unset): Set for a mid-epoch `last` (a worker shutting down saves one): the optimizer step it
            holds.
    """

    epoch: int
    metrics: EpochMetrics | None
    name: CheckpointReadName
    sha256: str
    size_bytes: int
    updated_at: datetime.datetime
    step: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.epoch_metrics import EpochMetrics  # noqa: PLC0415

        epoch = self.epoch

        metrics: dict[str, Any] | None
        if isinstance(self.metrics, EpochMetrics):
            metrics = self.metrics.to_dict()
        else:
            metrics = self.metrics

        name = self.name.value

        sha256 = self.sha256

        size_bytes = self.size_bytes

        updated_at = self.updated_at.isoformat()

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
                "metrics": metrics,
                "name": name,
                "sha256": sha256,
                "size_bytes": size_bytes,
                "updated_at": updated_at,
            }
        )
        if step is not UNSET:
            field_dict["step"] = step

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.epoch_metrics import EpochMetrics  # noqa: PLC0415

        d = dict(src_dict)
        epoch = d.pop("epoch")

        def _parse_metrics(data: object) -> EpochMetrics | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                metrics_type_0 = EpochMetrics.from_dict(data)

                return metrics_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(EpochMetrics | None, data)

        metrics = _parse_metrics(d.pop("metrics"))

        name = CheckpointReadName(d.pop("name"))

        sha256 = d.pop("sha256")

        size_bytes = d.pop("size_bytes")

        updated_at = datetime.datetime.fromisoformat(d.pop("updated_at"))

        def _parse_step(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        step = _parse_step(d.pop("step", UNSET))

        checkpoint_read = cls(
            epoch=epoch,
            metrics=metrics,
            name=name,
            sha256=sha256,
            size_bytes=size_bytes,
            updated_at=updated_at,
            step=step,
        )

        checkpoint_read.additional_properties = d
        return checkpoint_read

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
