from enum import StrEnum


class ClassWeighting(StrEnum):
    BALANCED = "balanced"
    NONE = "none"

    def __str__(self) -> str:
        return str(self.value)
