"""/v1/datasets: upload (multipart JSONL), read, list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Path, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from api.routes import AUTHED, error_responses
from api.routes.jobs import Cursor, Limit
from api.schemas import DatasetPage, DatasetRead
from api.services import datasets as service
from streamguard.contract import ID_PATTERN, NAME_PATTERN

router = APIRouter(prefix="/v1/datasets", tags=["datasets"],
                   responses=error_responses(*AUTHED))


@router.post("", status_code=201, response_model=DatasetRead, operation_id="uploadDataset",
             responses=error_responses(400, 413, 415, 502))
async def upload_dataset(
    tenant: CurrentTenant, session: SessionDep, settings: SettingsDep, store: StoreDep,
    file: Annotated[UploadFile, File(description="JSONL: one {func, target} object a line.")],
    name: Annotated[str | None, Form(min_length=1, max_length=200, pattern=NAME_PATTERN)] = None,
) -> DatasetRead:
    """Upload a JSONL split; every line is validated and the class balance is reported."""
    dataset = await run_in_threadpool(
        lambda: service.upload_dataset(session=session, store=store, settings=settings,
                                       tenant_id=tenant.id, src=file.file,
                                       filename=file.filename, name=name))
    return service.to_read(dataset)


@router.get("", response_model=DatasetPage, operation_id="listDatasets")
def list_datasets(tenant: CurrentTenant, session: SessionDep, limit: Limit = 50,
                  cursor: Cursor = None) -> DatasetPage:
    """Your datasets, newest first."""
    return service.list_datasets(session=session, tenant_id=tenant.id, limit=limit,
                                 cursor=cursor)


@router.get("/{dataset_id}", response_model=DatasetRead, operation_id="getDataset",
            responses=error_responses(404))
def get_dataset(dataset_id: Annotated[str, Path(min_length=32, max_length=32,
                                                pattern=ID_PATTERN)],
                tenant: CurrentTenant, session: SessionDep) -> DatasetRead:
    """One of your datasets: size, sha256 and its inspection (counts, balance, duplicates)."""
    return service.read_dataset(session=session, tenant_id=tenant.id, dataset_id=dataset_id)
