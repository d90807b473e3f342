from enum import StrEnum


class PredictItemLabelName(StrEnum):
    SAFE = "safe"
    VULNERABLE = "vulnerable"

    def __str__(self) -> str:
        return str(self.value)
