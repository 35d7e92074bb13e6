"""POST /models/{name}/classify without FastAPI's router and parameter machinery in the way.

Classification is what clients call most, and with FastAPI 0.16x, matching a route and
solving its parameters cost a front end about as much CPU as the route's own work. This ASGI
middleware sits innermost in the middleware stack (token, CORS, body limit and metrics still
wrap it) and calls the route's own function, so answers and errors are the same bytes.

It takes only requests it can read without doubt: the path, and a query string of plain
digits for ``top_k`` and ``version`` within their bounds. Everything else, a malformed
parameter included, goes to the app's router, which answers exactly as before.
"""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import classify
from service.errors import ApiError
from service.web.exception_handlers import api_error

_PATH = re.compile(r"/models/([^/]+)/classify")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")  # within 64 bits; longer ones go the long way


class ClassifyHotPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = next(
            route
            for route in classify.router.routes
            if isinstance(route, APIRoute) and route.endpoint is classify.classify
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        match = _PATH.fullmatch(scope["path"])
        query = _query(scope["query_string"]) if match is not None else None
        if match is None or query is None:
            await self.app(scope, receive, send)
            return
        name = match[1]
        scope["route"] = self.route  # as the router sets it: the metrics label by its template
        scope["endpoint"] = classify.classify
        scope["path_params"] = {"name": name}
        request = Request(scope, receive)
        try:
            response = await classify.classify(request, name, *query)
        except ApiError as error:
            response = await api_error(request, error)
        await response(scope, receive, send)


def _query(raw: bytes) -> tuple[int | None, int] | None:
    """``(version, top_k)`` from a query string of plain digits in range; None: not sure."""
    version, top_k = None, classify.DEFAULT_TOP_K
    if not raw:
        return version, top_k
    seen = set()
    for pair in raw.decode("latin-1").split("&"):
        key, _, value = pair.partition("=")
        if key in seen or "%" in key or "+" in key:
            return None  # repeated or encoded: the router decides
        seen.add(key)
        if key == "top_k":
            if not value.isdigit() or not value.isascii() or value[0] == "0":
                return None
            top_k = int(value)
            if top_k > classify.MAX_TOP_K:
                return None
        elif key == "version":
            if _VERSION.fullmatch(value) is None:
                return None
            version = int(value)
    return version, top_k
