"""/v1/jobs/{id}/checkpoints: list, and download the model archive (GET or HEAD, with Range)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path
from fastapi.responses import FileResponse, RedirectResponse, Response

from api.deps import JobDep, SessionDep, SettingsDep, StoreDep
from api.routes import AUTHED, error_responses
from api.schemas import CheckpointList
from api.services import checkpoints as service

router = APIRouter(prefix="/v1/jobs/{job_id}/checkpoints", tags=["checkpoints"],
                   responses=error_responses(*AUTHED, 404))

CheckpointName = Annotated[Literal["best", "last"], Path(
    description="`best` (the best epoch that passed the collapse guard) or `last`.")]
RangeHeader = Annotated[str | None, Header(
    alias="range", max_length=200,
    description="Byte ranges of the archive (`bytes=0-1023`), answered 206 when the store is "
                "local.")]

ARCHIVE = {"application/gzip": {"schema": {"type": "string", "format": "binary"}}}
DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "The model archive (the Hugging Face model folder under `model/`), "
                         "streamed when the store is local.", "content": ARCHIVE,
          "headers": {"Content-Length": {"schema": {"type": "integer"}},
                      "Accept-Ranges": {"schema": {"type": "string"}}}},
    206: {"description": "The requested byte range of the archive.", "content": ARCHIVE,
          "headers": {"Content-Range": {"schema": {"type": "string"}}}},
    307: {"description": "Redirect to a time-limited presigned URL when the store is S3.",
          "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}}},
    **error_responses(416, 502),
}


@router.get("", response_model=CheckpointList, operation_id="listCheckpoints")
def list_checkpoints(job: JobDep, session: SessionDep) -> CheckpointList:
    """The job's `best` and `last` checkpoints (archive size and sha256, epoch metrics)."""
    return service.list_checkpoints(session=session, job=job)


def _download(name: str, job: JobDep, session: SessionDep, settings: SettingsDep,
              store: StoreDep) -> Response:
    where = service.locate_archive(session=session, store=store, settings=settings, job=job,
                                   name=name)
    if where.url is not None:
        return RedirectResponse(where.url, status_code=307)
    assert where.path is not None
    return FileResponse(where.path, media_type="application/gzip", filename=where.filename)


@router.get("/{name}/download", response_model=None, response_class=FileResponse,
            operation_id="downloadCheckpoint", responses=DOWNLOAD_RESPONSES)
def download_checkpoint(name: CheckpointName, job: JobDep, session: SessionDep,
                        settings: SettingsDep, store: StoreDep,
                        _range: RangeHeader = None) -> Response:
    """Download the `.tar.gz` model archive of checkpoint `name`."""
    return _download(name, job, session, settings, store)


@router.head("/{name}/download", response_model=None, response_class=FileResponse,
             operation_id="headCheckpointDownload", responses=DOWNLOAD_RESPONSES)
def head_checkpoint(name: CheckpointName, job: JobDep, session: SessionDep,
                    settings: SettingsDep, store: StoreDep,
                    _range: RangeHeader = None) -> Response:
    """The download's headers (size, type) without its body."""
    return _download(name, job, session, settings, store)
