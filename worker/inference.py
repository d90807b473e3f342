"""The inference workers: `POST /v1/jobs/{id}/predict` runs here, never in the API process.

    python -m worker.inference                       # = celery -A worker.inference:app worker
                                                     #   --pool=solo --concurrency=1 -Q inference

A Celery app of its own on the `inference` queue (`inference.queue`), so a prediction never
waits behind a multi-hour training job, with the one result backend of the project
(`streamguard.predict.inference_celery_config`). The task loads the job's `best` checkpoint
through its pointer (`checkpoints/best.json`): the model archive is downloaded, its sha256
checked against the pointer's, and unpacked under `inference.cache_dir`; up to
`inference.cache_size` models stay loaded per worker process (least recently used first out,
keyed by job id + sha256, so a moved `best` is a new entry). Expected failures come back as
`{"error": {...}}` for the API to map; anything else fails the task (the API answers 500).
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from celery import Celery

from streamguard import contract
from streamguard.errors import StorageError, StreamGuardError
from streamguard.manifest import read_pointer
from streamguard.predict import (
    INFERENCE_TASK,
    MAX_FUNCTIONS,
    Predictor,
    inference_celery_config,
    unpack_model_archive,
)
from streamguard.settings import Settings, get_settings
from streamguard.storage import ArtifactStore, sha256_file, store_from_uri
from streamguard.training import data as _data  # noqa: F401 - torch loads at startup, not in
from streamguard.training import model as _model  # noqa: F401 - the first request's wait
from worker.logs import install_json_logging

log = logging.getLogger("streamguard.inference")

settings = get_settings()
settings.ensure_dirs()  # the filesystem broker needs its folders before the first poll

app = Celery("streamguard-inference")
app.conf.update(
    **inference_celery_config(settings),
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)
install_json_logging(settings.log)  # SG_LOG__FORMAT=json; text: Celery's format, as before

#: Seconds between deletions of results nobody read (a fraction of their lifetime).
CLEANUP_EVERY_S = max(60.0, settings.inference.result_expires_s / 4)


class ModelCache:
    """Loaded Predictors of this process, least recently used out first (their files too)."""

    def __init__(self, settings: Settings, store: ArtifactStore) -> None:
        self.settings, self.store = settings, store
        self.root = settings.inference.cache_dir
        self.capacity = settings.inference.cache_size
        self.models: OrderedDict[tuple[str, str], Predictor] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, *, job_id: str, pointer: dict[str, Any]) -> Predictor:
        key = (job_id, str(pointer["sha256"]))
        with self._lock:
            if key in self.models:
                self.models.move_to_end(key)
                return self.models[key]
            folder = self.fetch(job_id=job_id, pointer=pointer)
            predictor = Predictor(folder, device=self.settings.inference.device)
            self.models[key] = predictor
            while len(self.models) > self.capacity:
                (old_job, old_sha), old = self.models.popitem(last=False)
                log.info("model cache: evicting job %s (%s)", old_job, old_sha[:12])
                shutil.rmtree(old.model_dir, ignore_errors=True)
            return predictor

    def fetch(self, *, job_id: str, pointer: dict[str, Any]) -> Path:
        """The checkpoint's model folder, downloaded and verified unless already unpacked."""
        sha = str(pointer["sha256"])
        folder = self.root / f"{job_id}-{sha[:16]}"
        if (folder / "config.json").is_file():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".download-") as tmp:
            archive = Path(tmp) / "model.tar.gz"
            self.store.get_file(str(pointer["archive_key"]), archive)
            actual = sha256_file(archive)
            if actual != sha:
                raise StorageError(f"the best checkpoint of job {job_id} does not match its "
                                   f"pointer (sha256 {actual}, expected {sha})")
            unpack_model_archive(archive, folder)
        log.info("model cache: loaded job %s best epoch %s (%s)", job_id, pointer.get("epoch"),
                 sha[:12])
        return folder


_cache: ModelCache | None = None
_next_cleanup = 0.0


def model_cache() -> ModelCache:
    global _cache
    if _cache is None:
        store = store_from_uri(settings.storage.uri,
                               endpoint_url=settings.storage.s3_endpoint_url)
        _cache = ModelCache(settings, store)
    return _cache


def _cleanup_results() -> None:
    """Delete results past `result_expires` (answers the API stopped waiting for)."""
    global _next_cleanup
    if time.monotonic() < _next_cleanup:
        return
    _next_cleanup = time.monotonic() + CLEANUP_EVERY_S
    try:
        app.backend.cleanup()
    except Exception as exc:  # noqa: BLE001 - cleanup is housekeeping; the next one retries
        log.warning("result cleanup failed: %s", exc)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


@app.task(name=INFERENCE_TASK)
def predict(tenant_id: str, job_id: str, functions: list[str]) -> dict[str, Any]:
    """Score `functions` with the job's best checkpoint; plain JSON back (see module doc)."""
    _cleanup_results()
    if not (isinstance(functions, list) and 0 < len(functions) <= MAX_FUNCTIONS
            and all(isinstance(f, str) for f in functions)):
        return _error("invalid_request", f"expected 1..{MAX_FUNCTIONS} function strings")
    cache = model_cache()
    pointer = read_pointer(cache.store, contract.checkpoint_pointer_key(tenant_id, job_id,
                                                                        "best"))
    if pointer is None:
        return _error("no_checkpoint", f"job {job_id} has no best checkpoint in the store")
    try:
        predictor = cache.get(job_id=job_id, pointer=pointer)
    except StreamGuardError as exc:
        log.warning("job %s: cannot load its best checkpoint: %s", job_id, exc.message)
        return _error("invalid_checkpoint", exc.message)
    started = time.monotonic()
    items = [p.as_dict() for p in predictor.predict(functions)]
    log.info("job %s: %d prediction(s) in %.2f s", job_id, len(items),
             time.monotonic() - started)
    return {"checkpoint": {"name": "best", "epoch": int(pointer["epoch"]),
                           "sha256": str(pointer["sha256"])},
            "threshold": predictor.threshold, "items": items}


def main(argv: list[str] | None = None) -> None:
    """`python -m worker.inference [celery worker flags]`: one process, one task at a time."""
    app.worker_main(["worker", "--pool=solo", "--concurrency=1", "-Q",
                     settings.inference.queue, "--loglevel=INFO", "--hostname=inference@%h",
                     *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
