from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.duplicate_stats import DuplicateStats
    from ..models.length_stats import LengthStats


T = TypeVar("T", bound="DatasetStats")


@_attrs_define
class DatasetStats:
    """
    Attributes:
        duplicates (DuplicateStats):
        n_safe (int):
        n_vulnerable (int):
        rows (int):
        vulnerable_fraction (float | None):
        chars (LengthStats | None | Unset):
    """

    duplicates: DuplicateStats
    n_safe: int
    n_vulnerable: int
    rows: int
    vulnerable_fraction: float | None
    chars: LengthStats | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.length_stats import LengthStats  # noqa: PLC0415

        duplicates = self.duplicates.to_dict()

        n_safe = self.n_safe

        n_vulnerable = self.n_vulnerable

        rows = self.rows

        vulnerable_fraction: float | None
        vulnerable_fraction = self.vulnerable_fraction

        chars: dict[str, Any] | None | Unset
        if isinstance(self.chars, Unset):
            chars = UNSET
        elif isinstance(self.chars, LengthStats):
            chars = self.chars.to_dict()
        else:
            chars = self.chars

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "duplicates": duplicates,
                "n_safe": n_safe,
                "n_vulnerable": n_vulnerable,
                "rows": rows,
                "vulnerable_fraction": vulnerable_fraction,
            }
        )
        if chars is not UNSET:
            field_dict["chars"] = chars

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.duplicate_stats import DuplicateStats  # noqa: PLC0415
        from ..models.length_stats import LengthStats  # noqa: PLC0415

        d = dict(src_dict)
        duplicates = DuplicateStats.from_dict(d.pop("duplicates"))

        n_safe = d.pop("n_safe")

        n_vulnerable = d.pop("n_vulnerable")

        rows = d.pop("rows")

        def _parse_vulnerable_fraction(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        vulnerable_fraction = _parse_vulnerable_fraction(d.pop("vulnerable_fraction"))

        def _parse_chars(data: object) -> LengthStats | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                chars_type_0 = LengthStats.from_dict(data)

                return chars_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(LengthStats | None | Unset, data)

        chars = _parse_chars(d.pop("chars", UNSET))

        dataset_stats = cls(
            duplicates=duplicates,
            n_safe=n_safe,
            n_vulnerable=n_vulnerable,
            rows=rows,
            vulnerable_fraction=vulnerable_fraction,
            chars=chars,
        )

        dataset_stats.additional_properties = d
        return dataset_stats

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
