"""GET /: the explorer page, a static HTML/CSS/JS client of the public API (no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "static"
# Everything comes from this service: no CDN, and blob: URLs for the images it fetched.
POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

router = APIRouter(tags=["explorer"])


@router.get("/", include_in_schema=False)
async def explorer() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"},
    )


def static_files() -> StaticFiles:
    """The page's scripts and styles, mounted at /static."""
    return StaticFiles(directory=STATIC)
