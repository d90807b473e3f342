from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.checkpoint_event import CheckpointEvent
    from ..models.epoch_event import EpochEvent
    from ..models.evaluation_event import EvaluationEvent
    from ..models.rollback_event import RollbackEvent
    from ..models.status_event import StatusEvent
    from ..models.step_event import StepEvent
    from ..models.test_event import TestEvent
    from ..models.warning_event import WarningEvent


T = TypeVar("T", bound="JobEventPage")


@_attrs_define
class JobEventPage:
    """
    Attributes:
        items (list[CheckpointEvent | EpochEvent | EvaluationEvent | RollbackEvent | StatusEvent | StepEvent | TestEvent
            | WarningEvent]):
        next_after_id (int | None): Pass as `after_id` for the next page; null when no more events are stored yet.
    """

    items: list[
        CheckpointEvent
        | EpochEvent
        | EvaluationEvent
        | RollbackEvent
        | StatusEvent
        | StepEvent
        | TestEvent
        | WarningEvent
    ]
    next_after_id: int | None
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.checkpoint_event import CheckpointEvent  # noqa: PLC0415
        from ..models.epoch_event import EpochEvent  # noqa: PLC0415
        from ..models.evaluation_event import EvaluationEvent  # noqa: PLC0415
        from ..models.rollback_event import RollbackEvent  # noqa: PLC0415
        from ..models.status_event import StatusEvent  # noqa: PLC0415
        from ..models.step_event import StepEvent  # noqa: PLC0415
        from ..models.warning_event import WarningEvent  # noqa: PLC0415

        items = []
        for items_item_data in self.items:
            items_item: dict[str, Any]
            if isinstance(items_item_data, StatusEvent):
                items_item = items_item_data.to_dict()
            elif isinstance(items_item_data, EpochEvent):
                items_item = items_item_data.to_dict()
            elif isinstance(items_item_data, StepEvent):
                items_item = items_item_data.to_dict()
            elif isinstance(items_item_data, EvaluationEvent):
                items_item = items_item_data.to_dict()
            elif isinstance(items_item_data, RollbackEvent):
                items_item = items_item_data.to_dict()
            elif isinstance(items_item_data, WarningEvent):
                items_item = items_item_data.to_dict()
            elif isinstance(items_item_data, CheckpointEvent):
                items_item = items_item_data.to_dict()
            else:
                items_item = items_item_data.to_dict()

            items.append(items_item)

        next_after_id: int | None
        next_after_id = self.next_after_id

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "items": items,
                "next_after_id": next_after_id,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.checkpoint_event import CheckpointEvent  # noqa: PLC0415
        from ..models.epoch_event import EpochEvent  # noqa: PLC0415
        from ..models.evaluation_event import EvaluationEvent  # noqa: PLC0415
        from ..models.rollback_event import RollbackEvent  # noqa: PLC0415
        from ..models.status_event import StatusEvent  # noqa: PLC0415
        from ..models.step_event import StepEvent  # noqa: PLC0415
        from ..models.test_event import TestEvent  # noqa: PLC0415
        from ..models.warning_event import WarningEvent  # noqa: PLC0415

        d = dict(src_dict)
        items = []
        _items = d.pop("items")
        for items_item_data in _items:

            def _parse_items_item(
                data: object,
            ) -> (
                CheckpointEvent
                | EpochEvent
                | EvaluationEvent
                | RollbackEvent
                | StatusEvent
                | StepEvent
                | TestEvent
                | WarningEvent
            ):
                try:
                    if not isinstance(data, dict):
                        raise TypeError()
                    items_item_type_0 = StatusEvent.from_dict(data)

                    return items_item_type_0
                except (TypeError, ValueError, AttributeError, KeyError):
                    pass
                try:
                    if not isinstance(data, dict):
                        raise TypeError()
                    items_item_type_1 = EpochEvent.from_dict(data)

                    return items_item_type_1
                except (TypeError, ValueError, AttributeError, KeyError):
                    pass
                try:
                    if not isinstance(data, dict):
                        raise TypeError()
                    items_item_type_2 = StepEvent.from_dict(data)

                    return items_item_type_2
                except (TypeError, ValueError, AttributeError, KeyError):
                    pass
                try:
                    if not isinstance(data, dict):
                        raise TypeError()
                    items_item_type_3 = EvaluationEvent.from_dict(data)

                    return items_item_type_3
                except (TypeError, ValueError, AttributeError, KeyError):
                    pass
                try:
                    if not isinstance(data, dict):
                        raise TypeError()
                    items_item_type_4 = RollbackEvent.from_dict(data)

                    return items_item_type_4
                except (TypeError, ValueError, AttributeError, KeyError):
                    pass
                try:
                    if not isinstance(data, dict):
                        raise TypeError()
                    items_item_type_5 = WarningEvent.from_dict(data)

                    return items_item_type_5
                except (TypeError, ValueError, AttributeError, KeyError):
                    pass
                try:
                    if not isinstance(data, dict):
                        raise TypeError()
                    items_item_type_6 = CheckpointEvent.from_dict(data)

                    return items_item_type_6
                except (TypeError, ValueError, AttributeError, KeyError):
                    pass
                if not isinstance(data, dict):
                    raise TypeError()
                items_item_type_7 = TestEvent.from_dict(data)

                return items_item_type_7

            items_item = _parse_items_item(items_item_data)

            items.append(items_item)

        def _parse_next_after_id(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        next_after_id = _parse_next_after_id(d.pop("next_after_id"))

        job_event_page = cls(
            items=items,
            next_after_id=next_after_id,
        )

        job_event_page.additional_properties = d
        return job_event_page

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
