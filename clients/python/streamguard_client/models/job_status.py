from enum import StrEnum


class JobStatus(StrEnum):
    CANCELLED = "cancelled"
    COLLAPSED = "collapsed"
    COMPLETED = "completed"
    EARLY_STOPPED = "early_stopped"
    FAILED = "failed"
    NON_FINITE_LOSS = "non_finite_loss"
    NOT_LEARNING = "not_learning"
    QUEUED = "queued"
    RUNNING = "running"
    TIMED_OUT = "timed_out"

    def __str__(self) -> str:
        return str(self.value)
