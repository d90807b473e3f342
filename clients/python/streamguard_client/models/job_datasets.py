from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.dataset_id_ref import DatasetIdRef
    from ..models.dataset_uri_ref import DatasetUriRef


T = TypeVar("T", bound="JobDatasets")


@_attrs_define
class JobDatasets:
    """
    Attributes:
        train (DatasetIdRef | DatasetUriRef):
        val (DatasetIdRef | DatasetUriRef):
        test (DatasetIdRef | DatasetUriRef | None | Unset):
    """

    train: DatasetIdRef | DatasetUriRef
    val: DatasetIdRef | DatasetUriRef
    test: DatasetIdRef | DatasetUriRef | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.dataset_id_ref import DatasetIdRef  # noqa: PLC0415
        from ..models.dataset_uri_ref import DatasetUriRef  # noqa: PLC0415

        train: dict[str, Any]
        if isinstance(self.train, DatasetIdRef):
            train = self.train.to_dict()
        else:
            train = self.train.to_dict()

        val: dict[str, Any]
        if isinstance(self.val, DatasetIdRef):
            val = self.val.to_dict()
        else:
            val = self.val.to_dict()

        test: dict[str, Any] | None | Unset
        if isinstance(self.test, Unset):
            test = UNSET
        elif isinstance(self.test, DatasetIdRef):
            test = self.test.to_dict()
        elif isinstance(self.test, DatasetUriRef):
            test = self.test.to_dict()
        else:
            test = self.test

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "train": train,
                "val": val,
            }
        )
        if test is not UNSET:
            field_dict["test"] = test

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.dataset_id_ref import DatasetIdRef  # noqa: PLC0415
        from ..models.dataset_uri_ref import DatasetUriRef  # noqa: PLC0415

        d = dict(src_dict)

        def _parse_train(data: object) -> DatasetIdRef | DatasetUriRef:
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                train_type_0 = DatasetIdRef.from_dict(data)

                return train_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            if not isinstance(data, dict):
                raise TypeError()
            train_type_1 = DatasetUriRef.from_dict(data)

            return train_type_1

        train = _parse_train(d.pop("train"))

        def _parse_val(data: object) -> DatasetIdRef | DatasetUriRef:
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                val_type_0 = DatasetIdRef.from_dict(data)

                return val_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            if not isinstance(data, dict):
                raise TypeError()
            val_type_1 = DatasetUriRef.from_dict(data)

            return val_type_1

        val = _parse_val(d.pop("val"))

        def _parse_test(data: object) -> DatasetIdRef | DatasetUriRef | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                test_type_0_type_0 = DatasetIdRef.from_dict(data)

                return test_type_0_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                test_type_0_type_1 = DatasetUriRef.from_dict(data)

                return test_type_0_type_1
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(DatasetIdRef | DatasetUriRef | None | Unset, data)

        test = _parse_test(d.pop("test", UNSET))

        job_datasets = cls(
            train=train,
            val=val,
            test=test,
        )

        return job_datasets
