"""Build the FastAPI app: settings, lifespan, middleware, error handlers and routers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from importlib.metadata import version

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from service.api import ROUTERS, docs
from service.api.deps import AppContext
from service.api.explain import EXPLAIN_HEADERS
from service.api.explorer import static_files
from service.api.hot_path import ClassifyHotPath
from service.codecs.images import warm_up_decoder
from service.inference import Engine, EngineLike
from service.inference.runtime import Runtime
from service.metrics import Metrics
from service.settings import Settings
from service.web.exception_handlers import install_error_handlers
from service.web.middleware import BearerTokenMiddleware, BodyLimitMiddleware, MetricsMiddleware


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    context: AppContext = app.state.convbridge
    context.settings.check_repository()
    context.decoder = ThreadPoolExecutor(
        context.settings.decode_threads, thread_name_prefix="decode", initializer=warm_up_decoder
    )
    for _ in range(context.settings.decode_threads):  # start the threads (and warm them) now
        context.decoder.submit(int)
    # Models load in the background, so /healthz answers at once and /readyz reports progress.
    starting = asyncio.create_task(context.engine.start(), name="load-models")
    await context.engine.attached()  # a front end: the executor's first snapshot
    grpc_server = None
    address: tuple[str, int] | None = app.state.grpc_address
    if address is not None:
        from service.rpc import server as rpc

        grpc_server = await rpc.start(context, *address)
    try:
        yield
    finally:
        if grpc_server is not None:
            await rpc.stop(grpc_server)
        starting.cancel()
        await context.engine.close()
        context.decoder.shutdown(wait=False, cancel_futures=True)


class ConvbridgeApp(FastAPI):
    """FastAPI, with classification's hot path taken before its middleware stack."""

    hot_path: ClassifyHotPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot_path is not None and self.hot_path.takes(scope):
            scope["app"] = self
            await self.hot_path(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(
    settings: Settings | None = None,
    metrics: Metrics | None = None,
    runtime: Runtime | None = None,
    engine: EngineLike | None = None,
    grpc_address: tuple[str, int] | None = None,
) -> FastAPI:
    """The app; models load in its lifespan, never at import.

    ``engine``: the executor's client in a front end; by default, an engine in this process.
    ``grpc_address``: (host, port) to serve gRPC on, beside HTTP, from the same lifespan.
    """
    settings = settings or Settings()
    metrics = metrics or Metrics()
    engine = engine or Engine(settings, metrics, runtime)
    app = ConvbridgeApp(
        docs_url=None,  # served by api/docs.py from the package's own assets
        redoc_url=None,
        title="convbridge",
        version=version("convbridge"),
        description="Classification and intermediate feature maps of Keras CNNs over HTTP.",
        lifespan=lifespan,
    )
    app.state.convbridge = AppContext(settings, metrics, engine)
    app.state.grpc_address = grpc_address
    install_error_handlers(app)
    # The classify route's shortcut past all of the below (see hot_path.py).
    app.hot_path = ClassifyHotPath(settings, metrics)
    # Added first, so it runs inside CORS: preflight requests carry no token.
    if settings.api_token is not None:
        app.add_middleware(BearerTokenMiddleware, token=settings.api_token.get_secret_value())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[
                "Server-Timing",
                "X-Model-Version",
                "X-Feature-Grid",
                *EXPLAIN_HEADERS,
            ],
        )
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=settings.max_body_bytes,
        timeout_s=settings.body_timeout_s,
        min_rate=settings.body_min_bytes_per_s,
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics, access_log=settings.access_log)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", static_files(), name="static")
    app.mount(docs.PREFIX, docs.assets(), name="docs-assets")
    return app
