from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.confusion_matrix import ConfusionMatrix
    from ..models.prediction_distribution import PredictionDistribution
    from ..models.threshold_scores import ThresholdScores


T = TypeVar("T", bound="TestMetrics")


@_attrs_define
class TestMetrics:
    """The best checkpoint's scores on the test split: the top-level scores at the argmax
    (p >= 0.5), `at_threshold` at the threshold chosen on validation (never on test).

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
            at_threshold (None | ThresholdScores | Unset): The test scores at `threshold`. The test split never chooses the
                threshold.
            best_epoch (int | None | Unset): The epoch of the checkpoint tested.
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
            threshold (float | None | Unset): The decision threshold saved with the model: the best epoch's validation
                `best_threshold`. Null when none was chosen (the model then uses 0.5).
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
    at_threshold: None | ThresholdScores | Unset = UNSET
    best_epoch: int | None | Unset = UNSET
    best_threshold: float | None | Unset = UNSET
    best_threshold_f1: float | None | Unset = UNSET
    brier: float | None | Unset = UNSET
    ece: float | None | Unset = UNSET
    pr_auc: float | None | Unset = UNSET
    recall_at_fpr10: float | None | Unset = UNSET
    threshold: float | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.threshold_scores import ThresholdScores  # noqa: PLC0415

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

        at_threshold: dict[str, Any] | None | Unset
        if isinstance(self.at_threshold, Unset):
            at_threshold = UNSET
        elif isinstance(self.at_threshold, ThresholdScores):
            at_threshold = self.at_threshold.to_dict()
        else:
            at_threshold = self.at_threshold

        best_epoch: int | None | Unset
        if isinstance(self.best_epoch, Unset):
            best_epoch = UNSET
        else:
            best_epoch = self.best_epoch

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

        threshold: float | None | Unset
        if isinstance(self.threshold, Unset):
            threshold = UNSET
        else:
            threshold = self.threshold

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
        if at_threshold is not UNSET:
            field_dict["at_threshold"] = at_threshold
        if best_epoch is not UNSET:
            field_dict["best_epoch"] = best_epoch
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
        if threshold is not UNSET:
            field_dict["threshold"] = threshold

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        from ..models.confusion_matrix import ConfusionMatrix  # noqa: PLC0415
        from ..models.prediction_distribution import PredictionDistribution  # noqa: PLC0415
        from ..models.threshold_scores import ThresholdScores  # noqa: PLC0415

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

        def _parse_at_threshold(data: object) -> None | ThresholdScores | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                at_threshold_type_0 = ThresholdScores.from_dict(data)

                return at_threshold_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | ThresholdScores | Unset, data)

        at_threshold = _parse_at_threshold(d.pop("at_threshold", UNSET))

        def _parse_best_epoch(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        best_epoch = _parse_best_epoch(d.pop("best_epoch", UNSET))

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

        def _parse_threshold(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        threshold = _parse_threshold(d.pop("threshold", UNSET))

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
            at_threshold=at_threshold,
            best_epoch=best_epoch,
            best_threshold=best_threshold,
            best_threshold_f1=best_threshold_f1,
            brier=brier,
            ece=ece,
            pr_auc=pr_auc,
            recall_at_fpr10=recall_at_fpr10,
            threshold=threshold,
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
