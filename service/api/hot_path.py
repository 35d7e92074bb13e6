"""POST /models/{name}/classify without FastAPI's middleware stack, router and parameter
machinery in the way.

Classification is what clients call most. In a front end, FastAPI's and Starlette's layers
(exception middleware twice, the router, parameter solving, and a wrapper around every
``send``) cost about as much CPU as the route's own work. The app (``main.ConvbridgeApp``)
hands the requests this path takes straight to it: it applies the same pure-ASGI middleware
the app has (metrics by route template, the bearer token, the body's size and time limits),
calls the route's own function, and answers its errors with the app's own handlers, so
answers, errors and metrics are the same bytes.

It takes only requests it can read without doubt: the path, and a query string of plain
digits for ``top_k`` and ``version`` within their bounds, on an app without CORS (whose
headers depend on the request's origin). Everything else, a malformed parameter included,
goes the long way, which answers exactly as before.
"""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api import classify
from service.errors import ApiError
from service.metrics import Metrics
from service.settings import Settings
from service.web.exception_handlers import api_error, unexpected_error
from service.web.middleware import BearerTokenMiddleware, BodyLimitMiddleware, MetricsMiddleware

_PATH = re.compile(r"/models/([^/]+)/classify")
_VERSION = re.compile(r"[1-9][0-9]{0,17}")  # within 64 bits; longer ones go the long way
_ARGUMENTS = "convbridge.classify"  # scope key: (name, version, top_k) as matched


class ClassifyHotPath:
    """An ASGI app for the classify requests :meth:`takes` accepts."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.route = next(
            route
            for route in classify.router.routes
            if isinstance(route, APIRoute) and route.endpoint is classify.classify
        )
        self.enabled = not settings.cors_origins
        app: ASGIApp = self._classify
        if settings.api_token is not None:
            app = BearerTokenMiddleware(app, token=settings.api_token.get_secret_value())
        app = BodyLimitMiddleware(
            app,
            max_bytes=settings.max_body_bytes,
            timeout_s=settings.body_timeout_s,
            min_rate=settings.body_min_bytes_per_s,
        )
        self.app = MetricsMiddleware(app, metrics=metrics, access_log=settings.access_log)

    def takes(self, scope: Scope) -> bool:
        """True for a classify request this path answers (its arguments kept in the scope)."""
        if (
            not self.enabled
            or scope["type"] != "http"
            or scope["method"] != "POST"
            or scope.get("root_path")
        ):
            return False
        match = _PATH.fullmatch(scope["path"])
        if match is None:
            return False
        query = _query(scope["query_string"])
        if query is None:
            return False
        scope[_ARGUMENTS] = (match[1], *query)
        scope["route"] = self.route  # as the router sets it: the metrics label by its template
        scope["endpoint"] = classify.classify
        scope["path_params"] = {"name": match[1]}
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    async def _classify(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            response = await classify.classify(request, *scope[_ARGUMENTS])
        except ApiError as error:
            response = await api_error(request, error)
        except Exception as error:
            # As Starlette's ServerErrorMiddleware: the app's 500 answer, then the error
            # raised again for the server to log.
            await (await unexpected_error(request, error))(scope, receive, send)
            raise
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
