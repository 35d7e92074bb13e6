"""What the routes share: the app's context and the parameters several routes take."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Path, Query, Request

from service.errors import bad_request
from service.inference.interface import EngineLike
from service.metrics import Metrics
from service.settings import Settings


@dataclass
class AppContext:
    """What the running app holds: settings, metrics, the engine and the decoder threads."""

    settings: Settings
    metrics: Metrics
    engine: EngineLike  # in this process, or a client of the executor process
    decoder: ThreadPoolExecutor | None = field(default=None, repr=False)


def app_context(request: Request) -> AppContext:
    """The app's context, read off the request: every route reaches it this way.

    A plain call rather than a FastAPI dependency, which would cost every request a trip
    through dependency injection.
    """
    context: AppContext = request.app.state.convbridge
    return context


def parse_version(text: str | None) -> int | None:
    """A version from a TF Serving or KServe path (``/versions/{v}``); 400 unless positive."""
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise bad_request(f"version {text!r} must be a positive integer")
    return int(text)


ModelName = Annotated[
    str, Path(description="model name, a folder of the repository", examples=["gap"])
]
Version = Annotated[int | None, Query(ge=1, description="model version; default: newest ready")]
