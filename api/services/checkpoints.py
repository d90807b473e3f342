"""Checkpoint use cases: list a job's `best`/`last` records and locate a model archive."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from api.errors import CheckpointNotFound
from api.schemas import CheckpointList, CheckpointRead, EpochMetrics
from streamguard.db import metrics as metrics_repo
from streamguard.db.models import Checkpoint, Job
from streamguard.errors import StorageError
from streamguard.settings import Settings
from streamguard.storage import ArtifactNotFound, ArtifactStore, LocalArtifactStore, S3ArtifactStore


@dataclass(frozen=True)
class Download:
    """Where the archive is: a presigned URL (S3) or a local file; exactly one is set."""

    filename: str
    url: str | None = None
    path: Path | None = None


def archive_key(row: Checkpoint) -> str:
    """The model archive's key, as the worker recorded it from the pointer payload."""
    return str(row.manifest["archive_key"])


def list_checkpoints(*, session: Session, job: Job) -> CheckpointList:
    rows = metrics_repo.list_checkpoints(session=session, job_id=job.id)
    return CheckpointList(items=[CheckpointRead(
        name=row.name,  # type: ignore[arg-type]  # "best" | "last": the worker writes no other
        epoch=row.epoch, step=row.manifest.get("step"), size_bytes=row.size_bytes,
        sha256=row.manifest["sha256"], metrics=_evaluated(row.metrics),
        updated_at=row.updated_at) for row in rows])


def _evaluated(record: dict[str, Any]) -> EpochMetrics | None:
    """The epoch record of an end-of-epoch checkpoint; None for a mid-epoch one."""
    return None if "batches_done_in_epoch" in record else EpochMetrics.from_record(record)


def locate_archive(*, session: Session, store: ArtifactStore, settings: Settings, job: Job,
                   name: str) -> Download:
    """Raises CheckpointNotFound (listing the names there are) or ArtifactNotFound."""
    row = metrics_repo.get_checkpoint(session=session, job_id=job.id, name=name)
    if row is None:
        names = [r.name for r in metrics_repo.list_checkpoints(session=session, job_id=job.id)]
        available = ", ".join(names) if names else "none yet (the first is written after epoch 1)"
        raise CheckpointNotFound(f"job {job.id} has no checkpoint {name!r}; available: "
                                 f"{available}", field="name")
    key = archive_key(row)
    filename = f"{job.id}-{name}.tar.gz"
    if isinstance(store, S3ArtifactStore):
        return Download(filename=filename, url=store.presigned_get_url(
            key, expires_s=settings.storage.presign_expiry_s, filename=filename))
    if isinstance(store, LocalArtifactStore):
        path = store.local_path(key)
        if not path.is_file():
            raise ArtifactNotFound(f"the archive of checkpoint {name!r} is missing from the "
                                   "store; the job may still be publishing it", field="name")
        return Download(filename=filename, path=path)
    raise StorageError(f"downloads need a local or S3 store, not {type(store).__name__}")
