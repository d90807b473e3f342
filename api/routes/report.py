"""GET /v1/jobs/{id}/report.png: a picture of a job (filled in next)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
