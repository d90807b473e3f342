from enum import StrEnum


class LrScaling(StrEnum):
    LINEAR = "linear"
    NONE = "none"
    SQRT = "sqrt"

    def __str__(self) -> str:
        return str(self.value)
