from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.job_config import JobConfig
    from ..models.job_datasets import JobDatasets


T = TypeVar("T", bound="JobCreate")


@_attrs_define
class JobCreate:
    """Body of POST /v1/jobs: what to train. Everything is checked before anything is queued.

    Attributes:
        datasets (JobDatasets):
        config (JobConfig | Unset): `TrainConfig` as a service job takes it: `model` never names a server path.
        max_runtime_s (int | None | Unset): Wall-time limit in seconds; at most the deployment's
            worker.max_job_runtime_s.
        name (None | str | Unset):
    """

    datasets: JobDatasets
    config: JobConfig | Unset = UNSET
    max_runtime_s: int | None | Unset = UNSET
    name: None | str | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        datasets = self.datasets.to_dict()

        config: dict[str, Any] | Unset = UNSET
        if not isinstance(self.config, Unset):
            config = self.config.to_dict()

        max_runtime_s: int | None | Unset
        if isinstance(self.max_runtime_s, Unset):
            max_runtime_s = UNSET
        else:
            max_runtime_s = self.max_runtime_s

        name: None | str | Unset
        if isinstance(self.name, Unset):
            name = UNSET
        else:
            name = self.name

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "datasets": datasets,
            }
        )
        if config is not UNSET:
            field_dict["config"] = config
        if max_runtime_s is not UNSET:
            field_dict["max_runtime_s"] = max_runtime_s
        if name is not UNSET:
            field_dict["name"] = name

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.job_config import JobConfig  # noqa: PLC0415
        from ..models.job_datasets import JobDatasets  # noqa: PLC0415

        d = dict(src_dict)
        datasets = JobDatasets.from_dict(d.pop("datasets"))

        _config = d.pop("config", UNSET)
        config: JobConfig | Unset
        if isinstance(_config, Unset):
            config = UNSET
        else:
            config = JobConfig.from_dict(_config)

        def _parse_max_runtime_s(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_runtime_s = _parse_max_runtime_s(d.pop("max_runtime_s", UNSET))

        def _parse_name(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        name = _parse_name(d.pop("name", UNSET))

        job_create = cls(
            datasets=datasets,
            config=config,
            max_runtime_s=max_runtime_s,
            name=name,
        )

        return job_create
