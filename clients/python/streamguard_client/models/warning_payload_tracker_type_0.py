from enum import StrEnum


class WarningPayloadTrackerType0(StrEnum):
    MLFLOW = "mlflow"
    TENSORBOARD = "tensorboard"

    def __str__(self) -> str:
        return str(self.value)
