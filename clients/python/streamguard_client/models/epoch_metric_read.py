from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.confusion_matrix import ConfusionMatrix
    from ..models.prediction_distribution import PredictionDistribution


T = TypeVar("T", bound="EpochMetricRead")


@_attrs_define
class EpochMetricRead:
    """
    Attributes:
        accuracy (float):
        collapse_streak (int): Consecutive evaluations below the stop ratio.
        confusion_matrix (ConfusionMatrix): Counts with "vulnerable" as the positive class.
        created_at (datetime.datetime):
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
        updated_at (datetime.datetime):
        val_loss (float | None):
        warnings (list[str]): Collapse-guard warnings of this epoch.
        best_threshold (float | None | Unset): The p(vulnerable) threshold maximising F1 on this split (vulnerable when
            p >= threshold; ties to the lowest threshold). Null when the split has one class only.
        best_threshold_f1 (float | None | Unset): The F1 at `best_threshold`.
        brier (float | None | Unset): Brier score: mean squared error of p(vulnerable); lower is better. Null for an
            empty split.
        ece (float | None | Unset): Expected calibration error of p(vulnerable) over 10 equal-width bins; lower is
            better. Null for an empty split.
        pr_auc (float | None | Unset): Average precision (area under the precision-recall curve, no interpolation) of
            p(vulnerable). Null when the split has one class only.
        recall_at_fpr10 (float | None | Unset): The highest recall of a threshold that flags at most 10 % of the safe
            functions (false-positive rate <= 0.10). Null when the split has one class only.
        replayed (bool | Unset): This epoch was recorded before and ran again: an earlier attempt of the job lost the
            job before the epoch's checkpoint was published (this attempt resumed from the one before), or the guard rolled
            back to an earlier checkpoint. These values replace the earlier ones (one row per epoch in the metrics history;
            in the event stream, the later `epoch` event wins). Default: False.
    """

    accuracy: float
    collapse_streak: int
    confusion_matrix: ConfusionMatrix
    created_at: datetime.datetime
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
    updated_at: datetime.datetime
    val_loss: float | None
    warnings: list[str]
    best_threshold: float | None | Unset = UNSET
    best_threshold_f1: float | None | Unset = UNSET
    brier: float | None | Unset = UNSET
    ece: float | None | Unset = UNSET
    pr_auc: float | None | Unset = UNSET
    recall_at_fpr10: float | None | Unset = UNSET
    replayed: bool | Unset = False
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        accuracy = self.accuracy

        collapse_streak = self.collapse_streak

        confusion_matrix = self.confusion_matrix.to_dict()

        created_at = self.created_at.isoformat()

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

        updated_at = self.updated_at.isoformat()

        val_loss: float | None
        val_loss = self.val_loss

        warnings = self.warnings

        best_threshold: float | None | Unset
        if isinstance(self.best_threshold, Unset):
            best_threshold = UNSET
        else:
            best_threshold = self.best_threshold

        best_threshold_f1: float | None | Unset
        if isinstance(self.best_threshold_f1, Unset):
            best_threshold_f1 = UNSET
        else:
            best_threshold_f1 = self.best_threshold_f1

        brier: float | None | Unset
        if isinstance(self.brier, Unset):
            brier = UNSET
        else:
            brier = self.brier

        ece: float | None | Unset
        if isinstance(self.ece, Unset):
            ece = UNSET
        else:
            ece = self.ece

        pr_auc: float | None | Unset
        if isinstance(self.pr_auc, Unset):
            pr_auc = UNSET
        else:
            pr_auc = self.pr_auc

        recall_at_fpr10: float | None | Unset
        if isinstance(self.recall_at_fpr10, Unset):
            recall_at_fpr10 = UNSET
        else:
            recall_at_fpr10 = self.recall_at_fpr10

        replayed = self.replayed

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "accuracy": accuracy,
                "collapse_streak": collapse_streak,
                "confusion_matrix": confusion_matrix,
                "created_at": created_at,
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
                "updated_at": updated_at,
                "val_loss": val_loss,
                "warnings": warnings,
            }
        )
        if best_threshold is not UNSET:
            field_dict["best_threshold"] = best_threshold
        if best_threshold_f1 is not UNSET:
            field_dict["best_threshold_f1"] = best_threshold_f1
        if brier is not UNSET:
            field_dict["brier"] = brier
        if ece is not UNSET:
            field_dict["ece"] = ece
        if pr_auc is not UNSET:
            field_dict["pr_auc"] = pr_auc
        if recall_at_fpr10 is not UNSET:
            field_dict["recall_at_fpr10"] = recall_at_fpr10
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

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

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

        updated_at = datetime.datetime.fromisoformat(d.pop("updated_at"))

        def _parse_val_loss(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        val_loss = _parse_val_loss(d.pop("val_loss"))

        warnings = cast(list[str], d.pop("warnings"))

        def _parse_best_threshold(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        best_threshold = _parse_best_threshold(d.pop("best_threshold", UNSET))

        def _parse_best_threshold_f1(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        best_threshold_f1 = _parse_best_threshold_f1(d.pop("best_threshold_f1", UNSET))

        def _parse_brier(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        brier = _parse_brier(d.pop("brier", UNSET))

        def _parse_ece(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        ece = _parse_ece(d.pop("ece", UNSET))

        def _parse_pr_auc(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        pr_auc = _parse_pr_auc(d.pop("pr_auc", UNSET))

        def _parse_recall_at_fpr10(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        recall_at_fpr10 = _parse_recall_at_fpr10(d.pop("recall_at_fpr10", UNSET))

        replayed = d.pop("replayed", UNSET)

        epoch_metric_read = cls(
            accuracy=accuracy,
            collapse_streak=collapse_streak,
            confusion_matrix=confusion_matrix,
            created_at=created_at,
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
            updated_at=updated_at,
            val_loss=val_loss,
            warnings=warnings,
            best_threshold=best_threshold,
            best_threshold_f1=best_threshold_f1,
            brier=brier,
            ece=ece,
            pr_auc=pr_auc,
            recall_at_fpr10=recall_at_fpr10,
            replayed=replayed,
        )

        epoch_metric_read.additional_properties = d
        return epoch_metric_read

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
