from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.confusion_matrix import ConfusionMatrix
    from ..models.prediction_distribution import PredictionDistribution


T = TypeVar("T", bound="ThresholdScores")


@_attrs_define
class ThresholdScores:
    """Scores of a split with "vulnerable" when p(vulnerable) >= `threshold`.

    Attributes:
        accuracy (float):
        confusion_matrix (ConfusionMatrix): Counts with "vulnerable" as the positive class.
        f1 (float):
        mcc (float):
        precision (float):
        prediction_distribution (PredictionDistribution): How many functions of the split each class was predicted for,
            and how many it has.
        recall (float):
        threshold (float):
    """

    accuracy: float
    confusion_matrix: ConfusionMatrix
    f1: float
    mcc: float
    precision: float
    prediction_distribution: PredictionDistribution
    recall: float
    threshold: float
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        accuracy = self.accuracy

        confusion_matrix = self.confusion_matrix.to_dict()

        f1 = self.f1

        mcc = self.mcc

        precision = self.precision

        prediction_distribution = self.prediction_distribution.to_dict()

        recall = self.recall

        threshold = self.threshold

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "accuracy": accuracy,
                "confusion_matrix": confusion_matrix,
                "f1": f1,
                "mcc": mcc,
                "precision": precision,
                "prediction_distribution": prediction_distribution,
                "recall": recall,
                "threshold": threshold,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.confusion_matrix import ConfusionMatrix  # noqa: PLC0415
        from ..models.prediction_distribution import PredictionDistribution  # noqa: PLC0415

        d = dict(src_dict)
        accuracy = d.pop("accuracy")

        confusion_matrix = ConfusionMatrix.from_dict(d.pop("confusion_matrix"))

        f1 = d.pop("f1")

        mcc = d.pop("mcc")

        precision = d.pop("precision")

        prediction_distribution = PredictionDistribution.from_dict(d.pop("prediction_distribution"))

        recall = d.pop("recall")

        threshold = d.pop("threshold")

        threshold_scores = cls(
            accuracy=accuracy,
            confusion_matrix=confusion_matrix,
            f1=f1,
            mcc=mcc,
            precision=precision,
            prediction_distribution=prediction_distribution,
            recall=recall,
            threshold=threshold,
        )

        threshold_scores.additional_properties = d
        return threshold_scores

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
