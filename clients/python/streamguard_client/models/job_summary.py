from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.job_status import JobStatus
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.progress import Progress
    from ..models.test_metrics import TestMetrics


T = TypeVar("T", bound="JobSummary")


@_attrs_define
class JobSummary:
    """
    Attributes:
        attempts (int):
        best_epoch (int | None):
        best_metric (float | None):
        cancel_requested (bool):
        created_at (datetime.datetime):
        finished_at (datetime.datetime | None):
        heartbeat_at (datetime.datetime | None):
        id (str):
        name (None | str):
        outcome_message (None | str):
        progress (Progress):
        selection_metric (str):
        started_at (datetime.datetime | None):
        status (JobStatus):
        test_metrics (None | TestMetrics):
        warnings (list[str]): Problems found at submit that did not stop it (e.g. train/val overlap).
        eta_s (float | None | Unset): Seconds left, from the running time per optimizer step so far (per finished epoch
            before any step metrics); only while running.
    """

    attempts: int
    best_epoch: int | None
    best_metric: float | None
    cancel_requested: bool
    created_at: datetime.datetime
    finished_at: datetime.datetime | None
    heartbeat_at: datetime.datetime | None
    id: str
    name: None | str
    outcome_message: None | str
    progress: Progress
    selection_metric: str
    started_at: datetime.datetime | None
    status: JobStatus
    test_metrics: None | TestMetrics
    warnings: list[str]
    eta_s: float | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.test_metrics import TestMetrics  # noqa: PLC0415

        attempts = self.attempts

        best_epoch: int | None
        best_epoch = self.best_epoch

        best_metric: float | None
        best_metric = self.best_metric

        cancel_requested = self.cancel_requested

        created_at = self.created_at.isoformat()

        finished_at: None | str
        if isinstance(self.finished_at, datetime.datetime):
            finished_at = self.finished_at.isoformat()
        else:
            finished_at = self.finished_at

        heartbeat_at: None | str
        if isinstance(self.heartbeat_at, datetime.datetime):
            heartbeat_at = self.heartbeat_at.isoformat()
        else:
            heartbeat_at = self.heartbeat_at

        id = self.id

        name: None | str
        name = self.name

        outcome_message: None | str
        outcome_message = self.outcome_message

        progress = self.progress.to_dict()

        selection_metric = self.selection_metric

        started_at: None | str
        if isinstance(self.started_at, datetime.datetime):
            started_at = self.started_at.isoformat()
        else:
            started_at = self.started_at

        status = self.status.value

        test_metrics: dict[str, Any] | None
        if isinstance(self.test_metrics, TestMetrics):
            test_metrics = self.test_metrics.to_dict()
        else:
            test_metrics = self.test_metrics

        warnings = self.warnings

        eta_s: float | None | Unset
        if isinstance(self.eta_s, Unset):
            eta_s = UNSET
        else:
            eta_s = self.eta_s

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempts": attempts,
                "best_epoch": best_epoch,
                "best_metric": best_metric,
                "cancel_requested": cancel_requested,
                "created_at": created_at,
                "finished_at": finished_at,
                "heartbeat_at": heartbeat_at,
                "id": id,
                "name": name,
                "outcome_message": outcome_message,
                "progress": progress,
                "selection_metric": selection_metric,
                "started_at": started_at,
                "status": status,
                "test_metrics": test_metrics,
                "warnings": warnings,
            }
        )
        if eta_s is not UNSET:
            field_dict["eta_s"] = eta_s

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.progress import Progress  # noqa: PLC0415
        from ..models.test_metrics import TestMetrics  # noqa: PLC0415

        d = dict(src_dict)
        attempts = d.pop("attempts")

        def _parse_best_epoch(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        best_epoch = _parse_best_epoch(d.pop("best_epoch"))

        def _parse_best_metric(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        best_metric = _parse_best_metric(d.pop("best_metric"))

        cancel_requested = d.pop("cancel_requested")

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        def _parse_finished_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                finished_at_type_0 = datetime.datetime.fromisoformat(data)

                return finished_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        finished_at = _parse_finished_at(d.pop("finished_at"))

        def _parse_heartbeat_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                heartbeat_at_type_0 = datetime.datetime.fromisoformat(data)

                return heartbeat_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        heartbeat_at = _parse_heartbeat_at(d.pop("heartbeat_at"))

        id = d.pop("id")

        def _parse_name(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        name = _parse_name(d.pop("name"))

        def _parse_outcome_message(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        outcome_message = _parse_outcome_message(d.pop("outcome_message"))

        progress = Progress.from_dict(d.pop("progress"))

        selection_metric = d.pop("selection_metric")

        def _parse_started_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                started_at_type_0 = datetime.datetime.fromisoformat(data)

                return started_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        started_at = _parse_started_at(d.pop("started_at"))

        status = JobStatus(d.pop("status"))

        def _parse_test_metrics(data: object) -> None | TestMetrics:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                test_metrics_type_0 = TestMetrics.from_dict(data)

                return test_metrics_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | TestMetrics, data)

        test_metrics = _parse_test_metrics(d.pop("test_metrics"))

        warnings = cast(list[str], d.pop("warnings"))

        def _parse_eta_s(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        eta_s = _parse_eta_s(d.pop("eta_s", UNSET))

        job_summary = cls(
            attempts=attempts,
            best_epoch=best_epoch,
            best_metric=best_metric,
            cancel_requested=cancel_requested,
            created_at=created_at,
            finished_at=finished_at,
            heartbeat_at=heartbeat_at,
            id=id,
            name=name,
            outcome_message=outcome_message,
            progress=progress,
            selection_metric=selection_metric,
            started_at=started_at,
            status=status,
            test_metrics=test_metrics,
            warnings=warnings,
            eta_s=eta_s,
        )

        job_summary.additional_properties = d
        return job_summary

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
