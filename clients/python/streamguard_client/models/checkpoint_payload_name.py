from enum import StrEnum


class CheckpointPayloadName(StrEnum):
    BEST = "best"
    LAST = "last"

    def __str__(self) -> str:
        return str(self.value)
