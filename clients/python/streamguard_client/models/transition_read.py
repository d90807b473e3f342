from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_status import JobStatus

T = TypeVar("T", bound="TransitionRead")


@_attrs_define
class TransitionRead:
    """
    Attributes:
        created_at (datetime.datetime):
        from_status (JobStatus | None):
        reason (str):
        to_status (JobStatus):
    """

    created_at: datetime.datetime
    from_status: JobStatus | None
    reason: str
    to_status: JobStatus
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        created_at = self.created_at.isoformat()

        from_status: None | str
        if isinstance(self.from_status, JobStatus):
            from_status = self.from_status.value
        else:
            from_status = self.from_status

        reason = self.reason

        to_status = self.to_status.value

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "created_at": created_at,
                "from_status": from_status,
                "reason": reason,
                "to_status": to_status,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        def _parse_from_status(data: object) -> JobStatus | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                from_status_type_0 = JobStatus(data)

                return from_status_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(JobStatus | None, data)

        from_status = _parse_from_status(d.pop("from_status"))

        reason = d.pop("reason")

        to_status = JobStatus(d.pop("to_status"))

        transition_read = cls(
            created_at=created_at,
            from_status=from_status,
            reason=reason,
            to_status=to_status,
        )

        transition_read.additional_properties = d
        return transition_read

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
