"""The dashboard: static files under /ui/ (owned by the dashboard work; filled in next)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
