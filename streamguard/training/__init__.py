"""The collapse-guarded training core. Imports only torch, transformers, the stdlib and the
storage/sink protocols: never settings, a database, Redis, boto3, Celery or FastAPI."""

from streamguard.training.guards import StopReason
from streamguard.training.loop import RunResult, train
from streamguard.training.run import run

__all__ = ["RunResult", "StopReason", "run", "train"]
