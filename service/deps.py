"""Shared FastAPI dependencies as Annotated aliases, so handler signatures stay short.

They are coroutines on purpose: FastAPI runs plain functions on its thread pool.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query, Request

from service.errors import unavailable
from service.repository import ModelRepository
from service.state import AppState


def app_state(request: Request) -> AppState:
    """The app's state, for hot paths that skip dependency injection (it costs per request)."""
    state: AppState = request.app.state.convbridge
    return state


def app_repository(request: Request) -> ModelRepository:
    """The repository, or 503 while the service is starting."""
    state = app_state(request)
    if state.repository is None:
        reason = state.startup_error or "the service is starting: models are not loaded yet"
        raise unavailable(reason, retry_after=2)
    return state.repository


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.convbridge
    return state


async def get_repository(request: Request) -> ModelRepository:
    return app_repository(request)


State = Annotated[AppState, Depends(get_state)]
Repository = Annotated[ModelRepository, Depends(get_repository)]
ModelName = Annotated[
    str, Path(description="model name, a folder of the repository", examples=["gap"])
]
Version = Annotated[int | None, Query(ge=1, description="model version; default: newest ready")]
