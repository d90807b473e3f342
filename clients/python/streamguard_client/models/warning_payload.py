from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.warning_payload_source import WarningPayloadSource
from ..models.warning_payload_tracker_type_0 import WarningPayloadTrackerType0
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.prediction_distribution import PredictionDistribution


T = TypeVar("T", bound="WarningPayload")


@_attrs_define
class WarningPayload:
    """A collapse-guard warning (`source: guard`, with the evaluation's prediction
    distribution), or an experiment tracker that failed and is off for the rest of the run
    (`source: tracker`; the job trains on).

        Attributes:
            epoch (int):
            message (str):
            prediction_distribution (None | PredictionDistribution | Unset): The evaluation's prediction distribution
                (source: guard).
            source (WarningPayloadSource | Unset):  Default: WarningPayloadSource.GUARD.
            step (int | None | Unset): The optimizer step of the evaluation (or of the last metrics before a tracker
                failed).
            tracker (None | Unset | WarningPayloadTrackerType0): The tracker that failed (source: tracker).
    """

    epoch: int
    message: str
    prediction_distribution: None | PredictionDistribution | Unset = UNSET
    source: WarningPayloadSource | Unset = WarningPayloadSource.GUARD
    step: int | None | Unset = UNSET
    tracker: None | Unset | WarningPayloadTrackerType0 = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.prediction_distribution import PredictionDistribution  # noqa: PLC0415

        epoch = self.epoch

        message = self.message

        prediction_distribution: dict[str, Any] | None | Unset
        if isinstance(self.prediction_distribution, Unset):
            prediction_distribution = UNSET
        elif isinstance(self.prediction_distribution, PredictionDistribution):
            prediction_distribution = self.prediction_distribution.to_dict()
        else:
            prediction_distribution = self.prediction_distribution

        source: str | Unset = UNSET
        if not isinstance(self.source, Unset):
            source = self.source.value

        step: int | None | Unset
        if isinstance(self.step, Unset):
            step = UNSET
        else:
            step = self.step

        tracker: None | str | Unset
        if isinstance(self.tracker, Unset):
            tracker = UNSET
        elif isinstance(self.tracker, WarningPayloadTrackerType0):
            tracker = self.tracker.value
        else:
            tracker = self.tracker

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "epoch": epoch,
                "message": message,
            }
        )
        if prediction_distribution is not UNSET:
            field_dict["prediction_distribution"] = prediction_distribution
        if source is not UNSET:
            field_dict["source"] = source
        if step is not UNSET:
            field_dict["step"] = step
        if tracker is not UNSET:
            field_dict["tracker"] = tracker

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.prediction_distribution import PredictionDistribution  # noqa: PLC0415

        d = dict(src_dict)
        epoch = d.pop("epoch")

        message = d.pop("message")

        def _parse_prediction_distribution(data: object) -> None | PredictionDistribution | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                prediction_distribution_type_0 = PredictionDistribution.from_dict(data)

                return prediction_distribution_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | PredictionDistribution | Unset, data)

        prediction_distribution = _parse_prediction_distribution(d.pop("prediction_distribution", UNSET))

        _source = d.pop("source", UNSET)
        source: WarningPayloadSource | Unset
        if isinstance(_source, Unset):
            source = UNSET
        else:
            source = WarningPayloadSource(_source)

        def _parse_step(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        step = _parse_step(d.pop("step", UNSET))

        def _parse_tracker(data: object) -> None | Unset | WarningPayloadTrackerType0:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                tracker_type_0 = WarningPayloadTrackerType0(data)

                return tracker_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | Unset | WarningPayloadTrackerType0, data)

        tracker = _parse_tracker(d.pop("tracker", UNSET))

        warning_payload = cls(
            epoch=epoch,
            message=message,
            prediction_distribution=prediction_distribution,
            source=source,
            step=step,
            tracker=tracker,
        )

        warning_payload.additional_properties = d
        return warning_payload

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
