"""The dashboard: static files under /ui/ (no build step, no CDN), and `/` redirecting there.

The pages need no key to load; every call they make to /v1 sends `Authorization: Bearer`
(the key lives in the browser tab's sessionStorage only). The files ship in the wheel
(`[tool.setuptools.package-data]`). Nothing here is in the OpenAPI document.

Each file answer carries a Content-Security-Policy that allows only this origin: the page
cannot load anything from elsewhere (it works offline) and cannot send the key elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

UI_DIR = Path(__file__).resolve().parent.parent / "static" / "ui"

#: `style-src 'unsafe-inline'`: uPlot positions its legend and cursor with inline styles.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


class DashboardFiles(StaticFiles):
    """StaticFiles with the security headers above; `index.html` for the folder itself."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        if path in ("", ".", "index.html"):
            response.headers["Cache-Control"] = "no-cache"  # pick up a new release at once
        return response


router = APIRouter(include_in_schema=False)


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    """The service's front page is the dashboard."""
    return RedirectResponse("/ui/", status_code=307)


router.mount("/ui", DashboardFiles(directory=UI_DIR, html=True), name="ui")
