from enum import StrEnum


class JobConfigTrackersItem(StrEnum):
    MLFLOW = "mlflow"
    TENSORBOARD = "tensorboard"

    def __str__(self) -> str:
        return str(self.value)
