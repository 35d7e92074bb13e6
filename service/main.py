"""Build the FastAPI app: settings, lifespan, middleware, error handlers and routers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api import ROUTERS
from service.api.explorer import static_files
from service.handlers import install_error_handlers
from service.imaging import warm_up_decoder
from service.metrics import Metrics
from service.middleware import BearerTokenMiddleware, BodyLimitMiddleware, MetricsMiddleware
from service.runtime import Runtime
from service.settings import Settings
from service.state import AppState

log = logging.getLogger("convbridge.main")
VERSION = "0.1.0"


async def _start_models(state: AppState) -> None:
    """Configure TensorFlow and load every model, in the background so /healthz answers."""
    from service.repository import ModelRepository
    from service.runtime import configure_tensorflow, freeze_startup_heap

    try:
        if state.runtime is None:
            state.runtime = await asyncio.to_thread(configure_tensorflow, state.settings)
        freeze_startup_heap()
        repository = ModelRepository(state.settings, state.metrics, state.runtime)
        state.repository = repository
        await repository.load_initial()
        if state.settings.poll_interval_s > 0:
            from service.reload import Reloader

            state.reloader = asyncio.create_task(
                Reloader(repository).run(state.settings.poll_interval_s), name="reload"
            )
        ready, models = repository.readiness()
        log.info("start-up finished: ready=%s models=%s", ready, models)
    except Exception as error:  # reported by /readyz; the process stays up for diagnosis
        state.startup_error = f"start-up failed: {error}"
        log.exception("start-up failed")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.convbridge
    state.settings.check_repository()
    state.decoder = ThreadPoolExecutor(
        state.settings.decode_threads, thread_name_prefix="decode", initializer=warm_up_decoder
    )
    for _ in range(state.settings.decode_threads):  # start the threads (and warm them) now
        state.decoder.submit(int)
    state.loader = asyncio.create_task(_start_models(state), name="load-models")
    try:
        yield
    finally:
        state.loader.cancel()
        if state.reloader is not None:
            state.reloader.cancel()
        if state.repository is not None:
            await state.repository.close()
        state.decoder.shutdown(wait=False, cancel_futures=True)


def create_app(
    settings: Settings | None = None, metrics: Metrics | None = None, runtime: Runtime | None = None
) -> FastAPI:
    """The app; models load in its lifespan, never at import."""
    settings = settings or Settings()
    metrics = metrics or Metrics()
    app = FastAPI(
        title="convbridge",
        version=VERSION,
        description="Classification and intermediate feature maps of Keras CNNs over HTTP.",
        lifespan=lifespan,
    )
    app.state.convbridge = AppState(settings=settings, metrics=metrics, runtime=runtime)
    install_error_handlers(app)
    # Added first, so it runs inside CORS: preflight requests carry no token.
    if settings.api_token is not None:
        app.add_middleware(BearerTokenMiddleware, token=settings.api_token.get_secret_value())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["Server-Timing", "X-Model-Version", "X-Feature-Grid"],
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", static_files(), name="static")
    return app
