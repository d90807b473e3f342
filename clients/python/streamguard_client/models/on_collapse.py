from enum import StrEnum


class OnCollapse(StrEnum):
    ROLLBACK = "rollback"
    STOP = "stop"

    def __str__(self) -> str:
        return str(self.value)
