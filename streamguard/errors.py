"""The StreamGuard error hierarchy. Messages say what would have been accepted."""

from __future__ import annotations

from collections.abc import Sequence


class StreamGuardError(Exception):
    """Base class: an expected, user-facing failure (bugs stay ordinary exceptions)."""

    code = "streamguard_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidTrainConfig(StreamGuardError):
    """One or more TrainConfig fields are out of range; `problems` lists each field."""

    code = "invalid_train_config"

    def __init__(self, problems: Sequence[dict[str, str]]) -> None:
        self.problems = list(problems)
        text = "; ".join(f"{p['field']}: {p['message']}" for p in self.problems)
        super().__init__(f"invalid training config: {text}",
                         field=self.problems[0]["field"] if self.problems else None)


class DataError(StreamGuardError):
    """A dataset file is unusable; `problems` holds (line, reason) for the first offenders."""

    code = "invalid_dataset"

    def __init__(self, path: str, problems: Sequence[tuple[int, str]], *, total: int | None = None,
                 summary: str | None = None) -> None:
        self.path = path
        self.problems = list(problems)
        self.total = total if total is not None else len(self.problems)
        lines = [f"  line {n}: {why}" if n > 0 else f"  {why}" for n, why in self.problems]
        more = self.total - len(self.problems)
        if more > 0:
            lines.append(f"  ... and {more} more")
        head = summary or f"{path}: {self.total} bad line(s)"
        super().__init__(head + ("\n" + "\n".join(lines) if lines else ""), field="dataset")


class CheckpointError(StreamGuardError):
    """A checkpoint is missing, corrupt, or holds something other than plain state."""

    code = "invalid_checkpoint"


class StorageError(StreamGuardError):
    """An artifact store URI or object could not be used."""

    code = "storage_error"


class JobNotFound(StreamGuardError):
    code = "not_found"


class JobStateConflict(StreamGuardError):
    code = "conflict"


class TooManyRequests(StreamGuardError):
    """A per-tenant job quota or a per-key request rate is used up (HTTP 429).

    `retry_after_s` (at least 1) is sent as the `Retry-After` header.
    """

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_s: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = max(1, int(retry_after_s))
