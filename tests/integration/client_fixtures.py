"""Helpers shared by the tests that drive the API with clients nobody here wrote
(tests/integration/test_schemathesis.py, tests/integration/test_generated_client.py).

Datasets are generated C functions (`streamguard.synth`): both classes, and train/val drawn
with different seeds and id prefixes so that the two splits never share a function.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.orm import Session

from streamguard.contract import EventKind, JobStatus
from streamguard.db import jobs as jobs_repo
from streamguard.db import metrics as metrics_repo
from streamguard.db.tenants import create_tenant_key
from streamguard.storage import ArtifactStore
from streamguard.synth import synth_examples
from tests.integration.api_fixtures import make_archive


def jsonl(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def split_rows(split: str, n: int) -> list[dict[str, Any]]:
    """`n` generated functions for `split`; every split has its own seed and id prefix."""
    seeds = {"train": 11, "val": 22, "test": 33}
    return synth_examples(n, seed=seeds[split], id_prefix=split)


def new_tenant(sessions: Callable[[], Session], label: str) -> tuple[str, str]:
    """(tenant id, API key) of a fresh tenant."""
    with sessions() as session:
        tenant, key = create_tenant_key(session=session,
                                        tenant_name=f"{label}-{uuid.uuid4().hex[:10]}")
        session.commit()
        return tenant.id, key


# --- a job as a worker would leave it ----------------------------------------------------------

def epoch_record(epoch: int, *, val_rows: int = 10) -> dict[str, Any]:
    """An epoch record with every key the training loop writes (training/loop.py)."""
    vulnerable = val_rows // 2
    return {
        "epoch": epoch, "step": 4 * epoch, "train_loss": 0.69 - 0.01 * epoch,
        "val_loss": 0.7, "accuracy": 0.6, "precision": 0.5, "recall": 0.6, "f1": 0.545,
        "mcc": 0.2, "roc_auc": 0.62, "confusion_matrix": [[3, 2], [2, 3]],
        "prediction_distribution": {"predicted_vulnerable": 5, "predicted_safe": 5,
                                    "actual_vulnerable": vulnerable,
                                    "actual_safe": val_rows - vulnerable},
        "lr": 1e-4, "train_samples_per_s": 40.0, "epoch_time_s": 1.5, "warnings": [],
        "is_best": epoch == 1, "collapse_streak": 0,
    }


def finish_like_a_worker(sessions: Callable[[], Session], store: ArtifactStore, *,
                         tenant_id: str, job_id: str, epochs: int = 2) -> None:
    """Claim a queued job and write what a completed run writes: epoch rows, every event kind,
    the `best` and `last` checkpoints (with their archives in the store) and test metrics."""
    import hashlib

    archive = make_archive()
    with sessions() as session:
        token = jobs_repo.claim_job(session=session, job_id=job_id, worker_id="w-test",
                                    lease_s=600)
        assert token is not None, f"job {job_id} could not be claimed"
        session.commit()
    with sessions() as session:
        for epoch in range(1, epochs + 1):
            record = epoch_record(epoch)
            metrics_repo.upsert_epoch(session=session, job_id=job_id, token=token, epoch=epoch,
                                      record=record)
            metrics_repo.add_event(session=session, job_id=job_id, kind=EventKind.EPOCH,
                                   payload=record)
            jobs_repo.record_progress(session=session, job_id=job_id, token=token,
                                      current_epoch=epoch, best_epoch=1, best_metric=0.545)
        metrics_repo.add_event(session=session, job_id=job_id, kind=EventKind.WARNING, payload={
            "epoch": epochs, "message": "class vulnerable predicted for 28% of its count",
            "prediction_distribution": epoch_record(epochs)["prediction_distribution"]})
        for name, epoch in (("best", 1), ("last", epochs)):
            prefix = f"tenants/{tenant_id}/jobs/{job_id}/checkpoints/epoch-{epoch:04d}"
            store.put_bytes(archive, f"{prefix}.model.tar.gz")
            digest = hashlib.sha256(archive).hexdigest()
            metrics_repo.upsert_checkpoint(
                session=session, job_id=job_id, token=token, name=name, epoch=epoch,
                key_prefix=prefix, size_bytes=len(archive), metrics=epoch_record(epoch),
                manifest={"name": name, "epoch": epoch, "key_prefix": prefix,
                          "archive_key": f"{prefix}.model.tar.gz",
                          "size_bytes": len(archive), "sha256": digest,
                          "manifest": {"format": 1, "files": []}})
            metrics_repo.add_event(session=session, job_id=job_id, kind=EventKind.CHECKPOINT,
                                   payload={"name": name, "epoch": epoch,
                                            "size_bytes": len(archive), "sha256": digest})
        test_metrics = {key: value for key, value in epoch_record(1).items()
                        if key in ("accuracy", "precision", "recall", "f1", "mcc", "roc_auc",
                                   "confusion_matrix", "prediction_distribution")}
        test_metrics |= {"best_epoch": 1, "loss": 0.68}
        metrics_repo.add_event(session=session, job_id=job_id, kind=EventKind.TEST,
                               payload=test_metrics)
        session.commit()
    with sessions() as session:
        jobs_repo.finish_job(session=session, job_id=job_id, token=token,
                             status=JobStatus.COMPLETED, message=f"completed {epochs} epochs",
                             best_epoch=1, best_metric=0.545, test_metrics=test_metrics)
        session.commit()
