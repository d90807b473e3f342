from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define

T = TypeVar("T", bound="PredictRequest")


@_attrs_define
class PredictRequest:
    """Functions to score with the job's best checkpoint.

    Attributes:
        functions (list[str]): 1 to 64 function source texts; the whole body is also bounded by the deployment's
            api.max_json_bytes (413).
    """

    functions: list[str]

    def to_dict(self) -> dict[str, Any]:
        functions = self.functions

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "functions": functions,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        functions = cast(list[str], d.pop("functions"))

        predict_request = cls(
            functions=functions,
        )

        return predict_request
