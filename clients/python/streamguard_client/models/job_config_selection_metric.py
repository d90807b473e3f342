from enum import StrEnum


class JobConfigSelectionMetric(StrEnum):
    ACCURACY = "accuracy"
    F1 = "f1"
    MCC = "mcc"
    PRECISION = "precision"
    RECALL = "recall"
    ROC_AUC = "roc_auc"

    def __str__(self) -> str:
        return str(self.value)
