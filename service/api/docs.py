"""GET /docs (Swagger UI 5) and /redoc, from assets shipped with the package: no CDN.

The assets come from the fastapi-offline wheel (Swagger UI 5.x and ReDoc, under their
licences, Apache 2.0 and MIT, in that package), mounted at /docs-assets. Each page says in its
Content-Security-Policy that nothing loads from anywhere but this origin; its one inline
script is allowed by its hash.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
PREFIX = "/docs-assets"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)
# ReDoc's sidebar shows Redocly's logo from their CDN (the one remote URL either UI loads):
# the bundle is served with this package's own image in its place.
_REDOC_LOGO = b'src:"https://cdn.redoc.ly/redoc/logo-mini.svg"'
_LOCAL_LOGO = f'src:"{PREFIX}/favicon.png"'.encode()

router = APIRouter(include_in_schema=False)


def _policy(page: bytes, workers: bool = False) -> str:
    """Only this origin; inline styles (both UIs set them); the page's inline scripts by hash."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        + ("worker-src 'self' blob:; " if workers else "")
        + "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    )


def _secured(page: HTMLResponse, workers: bool = False) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _policy(bytes(page.body), workers)
    return page


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return _secured(
        get_swagger_ui_html(
            openapi_url=request.app.openapi_url,
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{PREFIX}/favicon.png",
        )
    )


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return _secured(
        get_redoc_html(
            openapi_url=request.app.openapi_url,
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{PREFIX}/favicon.png",
            with_google_fonts=False,
        ),
        workers=True,
    )


@router.get(f"{PREFIX}/redoc.standalone.js")
async def redoc_bundle() -> Response:
    """ReDoc's bundle with the local logo (matched before the /docs-assets mount)."""
    return Response(
        _redoc_bundle(), media_type="text/javascript", headers={"Cache-Control": "max-age=3600"}
    )


@functools.cache
def _redoc_bundle() -> bytes:
    bundle = (ASSETS / "redoc.standalone.js").read_bytes()
    return bundle.replace(_REDOC_LOGO, _LOCAL_LOGO)


def assets() -> StaticFiles:
    """Swagger UI's and ReDoc's scripts and styles, mounted at /docs-assets."""
    return StaticFiles(directory=ASSETS)
