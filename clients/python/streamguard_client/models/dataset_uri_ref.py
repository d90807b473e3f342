from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="DatasetUriRef")


@_attrs_define
class DatasetUriRef:
    """An object already in the configured S3 bucket, under `tenants/<your tenant id>/`.

    Attributes:
        uri (str): `s3://<bucket>/<prefix>/tenants/<your tenant id>/<key>`
    """

    uri: str

    def to_dict(self) -> dict[str, Any]:
        uri = self.uri

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "uri": uri,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        uri = d.pop("uri")

        dataset_uri_ref = cls(
            uri=uri,
        )

        return dataset_uri_ref
