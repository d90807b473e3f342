"""Uploaded datasets, always scoped by tenant: another tenant's dataset reads as missing."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from streamguard.db.jobs import decode_cursor, encode_cursor
from streamguard.db.models import Dataset
from streamguard.errors import StreamGuardError


class DatasetNotFound(StreamGuardError):
    """No dataset with this id for this tenant."""

    code = "not_found"


def create_dataset(*, session: Session, tenant_id: str, name: str, storage_key: str,
                   size_bytes: int, sha256: str, stats: dict[str, Any] | None = None) -> Dataset:
    """Record an uploaded dataset (the file is already in the store under `storage_key`)."""
    dataset = Dataset(tenant_id=tenant_id, name=name, storage_key=storage_key,
                      size_bytes=size_bytes, sha256=sha256, stats=stats or {})
    session.add(dataset)
    session.flush()
    return dataset


def get_dataset(*, session: Session, tenant_id: str, dataset_id: str) -> Dataset | None:
    return session.scalars(sa.select(Dataset).where(
        Dataset.id == dataset_id, Dataset.tenant_id == tenant_id)).one_or_none()


def get_datasets(*, session: Session, tenant_id: str,
                 dataset_ids: Collection[str]) -> dict[str, Dataset]:
    """The tenant's datasets among `dataset_ids`, by id, in one query (missing or foreign ids
    are absent)."""
    if not dataset_ids:
        return {}
    rows = session.scalars(_DATASETS, {"ids": sorted(set(dataset_ids)), "tenant_id": tenant_id})
    return {row.id: row for row in rows}


#: Built once: a reused statement keeps its cache key (`streamguard.db.jobs._pages`).
_DATASETS = sa.select(Dataset).where(Dataset.id.in_(sa.bindparam("ids", expanding=True)),
                                     Dataset.tenant_id == sa.bindparam("tenant_id"))


def get_dataset_or_raise(*, session: Session, tenant_id: str, dataset_id: str) -> Dataset:
    dataset = get_dataset(session=session, tenant_id=tenant_id, dataset_id=dataset_id)
    if dataset is None:
        raise DatasetNotFound(f"dataset {dataset_id!r} not found; list yours with GET /v1/datasets",
                              field="dataset_id")
    return dataset


def list_datasets(*, session: Session, tenant_id: str, limit: int,
                  cursor: str | None = None) -> tuple[list[Dataset], str | None]:
    """Newest first; returns (page, next_cursor or None)."""
    stmt = sa.select(Dataset).where(Dataset.tenant_id == tenant_id)
    if cursor is not None:
        created_at, last_id = decode_cursor(cursor)
        stmt = stmt.where(sa.or_(Dataset.created_at < created_at,
                                 sa.and_(Dataset.created_at == created_at, Dataset.id < last_id)))
    rows = list(session.scalars(
        stmt.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
