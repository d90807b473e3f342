from enum import StrEnum


class WarningPayloadSource(StrEnum):
    GUARD = "guard"
    TRACKER = "tracker"

    def __str__(self) -> str:
        return str(self.value)
