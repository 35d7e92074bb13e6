"""The steps every inference request shares: find the model, decode, run, account."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from service.batching import (
    BatchSizeMismatchError,
    BatchStats,
    DeadlineExceededError,
    QueueFullError,
)
from service.errors import ApiError, not_found, timed_out, too_large, unavailable, unprocessable
from service.imaging import DecodedImage, ImageError, decode_image
from service.repository import LoadedModel, ModelNotFoundError, ModelNotReadyError, ModelRepository
from service.state import AppState

_IMAGE_STATUS = {"too_large": 413, "unsupported": 415, "corrupt": 422, "empty": 400}


async def find_model(repository: ModelRepository, name: str, version: int | None) -> LoadedModel:
    """The model to answer with, or a 404/503 that names what exists."""
    try:
        return await repository.get(name, version)
    except ModelNotFoundError:
        if name not in repository.entries:
            known = ", ".join(sorted(repository.entries)) or "none"
            raise not_found(f"model {name!r} not found; available models: {known}") from None
        versions = sorted(repository.entries[name])
        raise not_found(f"model {name!r} has no version {version}; versions: {versions}") from None
    except ModelNotReadyError as error:
        raise unavailable(str(error), retry_after=2) from None


async def decode_all(
    state: AppState, model: LoadedModel, uploads: list[bytes], names: list[str | None]
) -> tuple[list[DecodedImage], float]:
    """Decode every upload on the decoder pool; returns images and the wall time it took."""
    loop = asyncio.get_running_loop()
    height, width, _ = model.card.input.shape
    settings = state.settings
    started = time.perf_counter()
    jobs = [
        loop.run_in_executor(
            state.decoder,
            decode_image,
            data,
            (height, width),
            model.card.input.channels,
            settings.max_image_pixels,
        )
        for data in uploads
    ]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    for index, result in enumerate(results):
        if isinstance(result, ImageError):
            label = f"image {index}" + (f" ({names[index]!r})" if names[index] else "")
            raise ApiError(_IMAGE_STATUS.get(result.kind, 422), f"{label}: {result}")
        if isinstance(result, BaseException):
            raise result
    return list(results), time.perf_counter() - started  # type: ignore[arg-type]


async def run_model(
    state: AppState, model: LoadedModel, signature: str, images: np.ndarray
) -> tuple[dict[str, np.ndarray], BatchStats]:
    """Queue images for one signature; full queues answer 503, passed deadlines 504."""
    try:
        return await model.batchers[signature].submit(images, state.settings.request_timeout_s)
    except QueueFullError as error:
        raise unavailable(
            f"model {model.name!r} is overloaded ({error}); retry shortly", retry_after=1
        ) from None
    except DeadlineExceededError as error:
        raise timed_out(f"model {model.name!r} did not answer in time: {error}") from None
    except BatchSizeMismatchError as error:
        raise ApiError(500, f"model {model.name!r} returned a malformed batch: {error}") from None


def record(state: AppState, model: LoadedModel, timings: dict[str, float]) -> None:
    for stage, seconds in timings.items():
        state.metrics.observe_stage(model.name, model.version, stage, seconds)


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return {503: "unavailable", 504: "timeout"}.get(
        status, "client_error" if status < 500 else "error"
    )


def count(state: AppState, name: str, endpoint: str, status: int) -> None:
    """Count a request for a model that exists (unknown names would make labels unbounded)."""
    repository = state.repository
    if repository is not None and name in repository.entries:
        state.metrics.requests.labels(name, endpoint, outcome_of(status)).inc()


def check_image_count(count_: int, limit: int) -> None:
    if count_ > limit:
        raise too_large(f"too many images: at most {limit} per request", limit_images=limit)


def one_image(count_: int) -> None:
    if count_ != 1:
        raise unprocessable(f"feature-maps takes exactly one image; this request has {count_}")


class Counted:
    """Counts one inference request in convbridge_requests_total by its final status."""

    def __init__(self, state: AppState, name: str, endpoint: str) -> None:
        self.state, self.name, self.endpoint = state, name, endpoint

    async def __aenter__(self) -> Counted:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        if kind is None:
            count(self.state, self.name, self.endpoint, 200)
        elif isinstance(error, ApiError):
            count(self.state, self.name, self.endpoint, error.status)
        elif isinstance(error, Exception):
            count(self.state, self.name, self.endpoint, 500)
