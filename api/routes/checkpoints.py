"""/v1/jobs/{id}/checkpoints: list, and download the model archive."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse, Response

from api.deps import JobDep, SessionDep, SettingsDep, StoreDep
from api.routes import error_responses
from api.schemas import CheckpointList
from api.services import checkpoints as service

router = APIRouter(prefix="/v1/jobs/{job_id}/checkpoints", tags=["checkpoints"],
                   responses=error_responses(401, 404))


@router.get("", response_model=CheckpointList)
def list_checkpoints(job: JobDep, session: SessionDep) -> CheckpointList:
    """The job's `best` and `last` checkpoints (archive size and sha256, metrics)."""
    return service.list_checkpoints(session=session, job=job)


@router.get(
    "/{name}/download", response_model=None, response_class=FileResponse,
    responses={
        200: {"description": "The model archive (Hugging Face model folder under `model/`), "
                             "streamed when the store is local.",
              "content": {"application/gzip": {"schema": {"type": "string",
                                                          "format": "binary"}}}},
        307: {"description": "Redirect to a time-limited presigned URL when the store is S3.",
              "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}}},
        **error_responses(502),
    })
def download_checkpoint(name: str, job: JobDep, session: SessionDep, settings: SettingsDep,
                        store: StoreDep) -> Response:
    """Download the `.tar.gz` model archive of checkpoint `name` (`best` or `last`)."""
    where = service.locate_archive(session=session, store=store, settings=settings, job=job,
                                   name=name)
    if where.url is not None:
        return RedirectResponse(where.url, status_code=307)
    assert where.path is not None
    return FileResponse(where.path, media_type="application/gzip", filename=where.filename)
