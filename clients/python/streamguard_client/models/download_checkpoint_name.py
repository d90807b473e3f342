from enum import StrEnum


class DownloadCheckpointName(StrEnum):
    BEST = "best"
    LAST = "last"

    def __str__(self) -> str:
        return str(self.value)
