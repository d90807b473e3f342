"""/v1/datasets: upload (multipart JSONL), read, list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from starlette.concurrency import run_in_threadpool

from api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from api.routes import error_responses
from api.schemas import DatasetPage, DatasetRead
from api.services import datasets as service

router = APIRouter(prefix="/v1/datasets", tags=["datasets"],
                   responses=error_responses(401, 422))


@router.post("", status_code=201, response_model=DatasetRead,
             responses=error_responses(413, 502))
async def upload_dataset(
    tenant: CurrentTenant, session: SessionDep, settings: SettingsDep, store: StoreDep,
    file: Annotated[UploadFile, File(description="JSONL: one {func, target} object a line.")],
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> DatasetRead:
    """Upload a JSONL split; every line is validated and the class balance is reported."""
    dataset = await run_in_threadpool(
        lambda: service.upload_dataset(session=session, store=store, settings=settings,
                                       tenant_id=tenant.id, src=file.file,
                                       filename=file.filename, name=name))
    return service.to_read(dataset)


@router.get("", response_model=DatasetPage)
def list_datasets(tenant: CurrentTenant, session: SessionDep, settings: SettingsDep,
                  limit: Annotated[int, Query(ge=1)] = 50,
                  cursor: str | None = None) -> DatasetPage:
    """Your datasets, newest first."""
    return service.list_datasets(session=session, settings=settings, tenant_id=tenant.id,
                                 limit=limit, cursor=cursor)


@router.get("/{dataset_id}", response_model=DatasetRead, responses=error_responses(404))
def get_dataset(dataset_id: str, tenant: CurrentTenant, session: SessionDep) -> DatasetRead:
    return service.read_dataset(session=session, tenant_id=tenant.id, dataset_id=dataset_id)
