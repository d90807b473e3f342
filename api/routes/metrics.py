"""GET /metrics: Prometheus text exposition of this API process (api/metrics.py).

No API key, like /healthz (a Prometheus server scrapes it); it names no tenant, job or key.
Kept out of the OpenAPI document: it is Prometheus's format, not part of the JSON contract
(docs/operations.md lists every metric). A sync route: the scrape's database and broker reads
run in a worker thread, never on the event loop.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.metrics import ApiMetrics

router = APIRouter(include_in_schema=False)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    """The process's metrics in Prometheus's text format."""
    registry: ApiMetrics = request.app.state.metrics
    body, content_type = registry.exposition()
    return Response(body, media_type=content_type)
