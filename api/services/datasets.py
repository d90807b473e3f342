"""Dataset use cases: receive an upload (size-limited), validate, inspect, store, record."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy.orm import Session

from api.errors import PayloadTooLarge
from api.schemas import DatasetPage, DatasetRead, DatasetStats
from streamguard.contract import dataset_hashes_key, dataset_key
from streamguard.datasets import Example, inspect_files, read_examples
from streamguard.db import datasets as datasets_repo
from streamguard.db.models import Dataset
from streamguard.errors import DataError
from streamguard.settings import Settings
from streamguard.storage import ArtifactStore, display_key

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
HASH_BYTES = 8


def func_hashes(examples: list[Example]) -> bytes:
    """The sorted, distinct 8-byte sha256 prefixes of the functions (for overlap checks)."""
    digests = {hashlib.sha256(e.func.encode("utf-8")).digest()[:HASH_BYTES] for e in examples}
    return b"".join(sorted(digests))


def read_func_hashes(data: bytes) -> set[bytes]:
    return {data[i:i + HASH_BYTES] for i in range(0, len(data) - HASH_BYTES + 1, HASH_BYTES)}


def _copy_limited(src: BinaryIO, dest: Path, max_bytes: int) -> tuple[int, str]:
    """Copy in 1 MiB chunks, hashing as we go; PayloadTooLarge as soon as the limit is passed."""
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(f"the file is larger than {max_bytes // CHUNK} MiB, this "
                                      "deployment's upload limit; split it or ask for a higher "
                                      "api.max_upload_mb", field="file")
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest()


def upload_dataset(*, session: Session, store: ArtifactStore, settings: Settings,
                   tenant_id: str, src: BinaryIO, filename: str | None,
                   name: str | None) -> Dataset:
    """Validate the JSONL upload (every line), inspect it, store it and record it.

    All or nothing: the row is committed only once both objects are stored, and whatever was
    stored is removed again when a later step fails, so there is never a row without its
    objects nor (short of a crash in between) an object without its row.

    Raises:
        PayloadTooLarge: above `settings.api.max_upload_mb`.
        DataError: bad lines (listed by line number) or no rows at all.
        StoreUnavailable: the store refused a write (read-only, full, unreachable); nothing
            was recorded (503 `store_unavailable`).
    """
    label = filename or "upload.jsonl"
    with tempfile.TemporaryDirectory(prefix="sg-upload-") as tmp:
        path = Path(tmp) / "data.jsonl"
        size, sha256 = _copy_limited(src, path, settings.api.max_upload_mb * CHUNK)
        try:
            examples = read_examples(path)
        except DataError as exc:  # name the upload, not our temp file
            raise DataError(label, exc.problems, total=exc.total,
                            summary=str(exc.message).splitlines()[0].replace(str(path), label)
                            ) from None
        stats = _stats(inspect_files([path])["files"][0])
        dataset = datasets_repo.create_dataset(
            session=session, tenant_id=tenant_id, name=name or label, storage_key="",
            size_bytes=size, sha256=sha256, stats=stats)
        dataset.storage_key = dataset_key(tenant_id, dataset.id)
        keys = [dataset.storage_key, dataset_hashes_key(tenant_id, dataset.id)]
        try:
            store.put_file(path, keys[0])
            store.put_bytes(func_hashes(examples), keys[1])
            session.commit()
        except BaseException:
            with suppress(Exception):  # a database that is down fails its rollback too
                session.rollback()  # no row ...
            _remove(store, keys)  # ... and no object
            raise
    return dataset


def _remove(store: ArtifactStore, keys: list[str]) -> None:
    """Best-effort removal of what an aborted upload stored (a full store still deletes; a
    read-only one stored nothing)."""
    for key in keys:
        try:
            store.delete(key)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            log.warning("could not remove %s after a failed upload", display_key(key),
                        exc_info=True)


def _stats(file_stats: dict[str, Any]) -> dict[str, Any]:
    keep = ("rows", "n_safe", "n_vulnerable", "vulnerable_fraction", "duplicates", "chars")
    return {key: file_stats[key] for key in keep}


def to_read(dataset: Dataset) -> DatasetRead:
    return DatasetRead(id=dataset.id, name=dataset.name, size_bytes=dataset.size_bytes,
                       sha256=dataset.sha256, stats=DatasetStats.model_validate(dataset.stats),
                       created_at=dataset.created_at)


def read_dataset(*, session: Session, tenant_id: str, dataset_id: str) -> DatasetRead:
    """Raises DatasetNotFound for a missing or foreign id."""
    return to_read(datasets_repo.get_dataset_or_raise(session=session, tenant_id=tenant_id,
                                                      dataset_id=dataset_id))


def list_datasets(*, session: Session, tenant_id: str, limit: int,
                  cursor: str | None) -> DatasetPage:
    rows, next_cursor = datasets_repo.list_datasets(session=session, tenant_id=tenant_id,
                                                    limit=limit, cursor=cursor)
    return DatasetPage(items=[to_read(d) for d in rows], next_cursor=next_cursor)
