from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.confusion_matrix import ConfusionMatrix
    from ..models.prediction_distribution import PredictionDistribution


T = TypeVar("T", bound="EpochMetrics")


@_attrs_define
class EpochMetrics:
    """One epoch's validation record, as stored and as streamed in `epoch` events.

    Attributes:
        accuracy (float):
        collapse_streak (int): Consecutive epochs below the stop ratio.
        confusion_matrix (ConfusionMatrix): Counts with "vulnerable" as the positive class.
        epoch (int):
        epoch_time_s (float):
        f1 (float):
        is_best (bool): This epoch is the best so far (and passed the guard).
        lr (float):
        mcc (float):
        precision (float):
        prediction_distribution (PredictionDistribution): How many functions of the split each class was predicted for,
            and how many it has.
        recall (float):
        roc_auc (float | None): Null when the split has one class only.
        step (int): Optimizer steps so far.
        train_loss (float | None):
        train_samples_per_s (float):
        val_loss (float | None):
        warnings (list[str]): Collapse-guard warnings of this epoch.
        replayed (bool | Unset): An earlier attempt of the job had recorded this epoch, then lost the job before the
            epoch's checkpoint was published; this attempt resumed from the checkpoint before and ran the epoch again. These
            values replace the earlier ones (one row per epoch in the metrics history; in the event stream, the later
            `epoch` event wins). Default: False.
    """

    accuracy: float
    collapse_streak: int
    confusion_matrix: ConfusionMatrix
    epoch: int
    epoch_time_s: float
    f1: float
    is_best: bool
    lr: float
    mcc: float
    precision: float
    prediction_distribution: PredictionDistribution
    recall: float
    roc_auc: float | None
    step: int
    train_loss: float | None
    train_samples_per_s: float
    val_loss: float | None
    warnings: list[str]
    replayed: bool | Unset = False
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        accuracy = self.accuracy

        collapse_streak = self.collapse_streak

        confusion_matrix = self.confusion_matrix.to_dict()

        epoch = self.epoch

        epoch_time_s = self.epoch_time_s

        f1 = self.f1

        is_best = self.is_best

        lr = self.lr

        mcc = self.mcc

        precision = self.precision

        prediction_distribution = self.prediction_distribution.to_dict()

        recall = self.recall

        roc_auc: float | None
        roc_auc = self.roc_auc

        step = self.step

        train_loss: float | None
        train_loss = self.train_loss

        train_samples_per_s = self.train_samples_per_s

        val_loss: float | None
        val_loss = self.val_loss

        warnings = self.warnings

        replayed = self.replayed

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "accuracy": accuracy,
                "collapse_streak": collapse_streak,
                "confusion_matrix": confusion_matrix,
                "epoch": epoch,
                "epoch_time_s": epoch_time_s,
                "f1": f1,
                "is_best": is_best,
                "lr": lr,
                "mcc": mcc,
                "precision": precision,
                "prediction_distribution": prediction_distribution,
                "recall": recall,
                "roc_auc": roc_auc,
                "step": step,
                "train_loss": train_loss,
                "train_samples_per_s": train_samples_per_s,
                "val_loss": val_loss,
                "warnings": warnings,
            }
        )
        if replayed is not UNSET:
            field_dict["replayed"] = replayed

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.confusion_matrix import ConfusionMatrix  # noqa: PLC0415
        from ..models.prediction_distribution import PredictionDistribution  # noqa: PLC0415

        d = dict(src_dict)
        accuracy = d.pop("accuracy")

        collapse_streak = d.pop("collapse_streak")

        confusion_matrix = ConfusionMatrix.from_dict(d.pop("confusion_matrix"))

        epoch = d.pop("epoch")

        epoch_time_s = d.pop("epoch_time_s")

        f1 = d.pop("f1")

        is_best = d.pop("is_best")

        lr = d.pop("lr")

        mcc = d.pop("mcc")

        precision = d.pop("precision")

        prediction_distribution = PredictionDistribution.from_dict(d.pop("prediction_distribution"))

        recall = d.pop("recall")

        def _parse_roc_auc(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        roc_auc = _parse_roc_auc(d.pop("roc_auc"))

        step = d.pop("step")

        def _parse_train_loss(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        train_loss = _parse_train_loss(d.pop("train_loss"))

        train_samples_per_s = d.pop("train_samples_per_s")

        def _parse_val_loss(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        val_loss = _parse_val_loss(d.pop("val_loss"))

        warnings = cast(list[str], d.pop("warnings"))

        replayed = d.pop("replayed", UNSET)

        epoch_metrics = cls(
            accuracy=accuracy,
            collapse_streak=collapse_streak,
            confusion_matrix=confusion_matrix,
            epoch=epoch,
            epoch_time_s=epoch_time_s,
            f1=f1,
            is_best=is_best,
            lr=lr,
            mcc=mcc,
            precision=precision,
            prediction_distribution=prediction_distribution,
            recall=recall,
            roc_auc=roc_auc,
            step=step,
            train_loss=train_loss,
            train_samples_per_s=train_samples_per_s,
            val_loss=val_loss,
            warnings=warnings,
            replayed=replayed,
        )

        epoch_metrics.additional_properties = d
        return epoch_metrics

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
