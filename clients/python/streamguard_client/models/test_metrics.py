from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.confusion_matrix import ConfusionMatrix
    from ..models.prediction_distribution import PredictionDistribution


T = TypeVar("T", bound="TestMetrics")


@_attrs_define
class TestMetrics:
    """The best checkpoint's scores on the test split.

    Attributes:
        accuracy (float):
        confusion_matrix (ConfusionMatrix): Counts with "vulnerable" as the positive class.
        f1 (float):
        loss (float | None):
        mcc (float):
        precision (float):
        prediction_distribution (PredictionDistribution): How many functions of the split each class was predicted for,
            and how many it has.
        recall (float):
        roc_auc (float | None): Null when the split has one class only.
        best_epoch (int | None | Unset): The epoch of the checkpoint tested.
    """

    accuracy: float
    confusion_matrix: ConfusionMatrix
    f1: float
    loss: float | None
    mcc: float
    precision: float
    prediction_distribution: PredictionDistribution
    recall: float
    roc_auc: float | None
    best_epoch: int | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        accuracy = self.accuracy

        confusion_matrix = self.confusion_matrix.to_dict()

        f1 = self.f1

        loss: float | None
        loss = self.loss

        mcc = self.mcc

        precision = self.precision

        prediction_distribution = self.prediction_distribution.to_dict()

        recall = self.recall

        roc_auc: float | None
        roc_auc = self.roc_auc

        best_epoch: int | None | Unset
        if isinstance(self.best_epoch, Unset):
            best_epoch = UNSET
        else:
            best_epoch = self.best_epoch

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "accuracy": accuracy,
                "confusion_matrix": confusion_matrix,
                "f1": f1,
                "loss": loss,
                "mcc": mcc,
                "precision": precision,
                "prediction_distribution": prediction_distribution,
                "recall": recall,
                "roc_auc": roc_auc,
            }
        )
        if best_epoch is not UNSET:
            field_dict["best_epoch"] = best_epoch

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.confusion_matrix import ConfusionMatrix  # noqa: PLC0415
        from ..models.prediction_distribution import PredictionDistribution  # noqa: PLC0415

        d = dict(src_dict)
        accuracy = d.pop("accuracy")

        confusion_matrix = ConfusionMatrix.from_dict(d.pop("confusion_matrix"))

        f1 = d.pop("f1")

        def _parse_loss(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        loss = _parse_loss(d.pop("loss"))

        mcc = d.pop("mcc")

        precision = d.pop("precision")

        prediction_distribution = PredictionDistribution.from_dict(d.pop("prediction_distribution"))

        recall = d.pop("recall")

        def _parse_roc_auc(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        roc_auc = _parse_roc_auc(d.pop("roc_auc"))

        def _parse_best_epoch(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        best_epoch = _parse_best_epoch(d.pop("best_epoch", UNSET))

        test_metrics = cls(
            accuracy=accuracy,
            confusion_matrix=confusion_matrix,
            f1=f1,
            loss=loss,
            mcc=mcc,
            precision=precision,
            prediction_distribution=prediction_distribution,
            recall=recall,
            roc_auc=roc_auc,
            best_epoch=best_epoch,
        )

        test_metrics.additional_properties = d
        return test_metrics

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
