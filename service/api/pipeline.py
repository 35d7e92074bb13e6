"""The steps every inference request shares: find the model, decode, run, account."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import numpy as np
from fastapi import Request

from service.api.uploads import Upload
from service.batching import (
    Batcher,
    BatchSizeMismatchError,
    BatchStats,
    DeadlineExceededError,
    QueueFullError,
)
from service.deps import app_state
from service.errors import (
    ApiError,
    bad_request,
    not_found,
    timed_out,
    unavailable,
    unprocessable,
)
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


@dataclass(frozen=True)
class Inference:
    images: list[DecodedImage]
    outputs: dict[str, np.ndarray]
    stats: BatchStats
    decode_seconds: float


async def infer(
    scope: RequestScope, model: LoadedModel, signature: str, uploads: list[Upload]
) -> Inference:
    """Decode the uploads and run them through one signature of the model.

    The batcher hears of the images before they are decoded, so that it waits for them
    rather than running a batch without them.
    """
    scope.settle()
    batcher = model.batchers[signature]
    batcher.announce(len(uploads))
    try:
        images, decode_seconds = await decode_all(
            scope.state, model, [u.data for u in uploads], [u.filename for u in uploads]
        )
    except BaseException:
        batcher.withdraw(len(uploads))
        raise
    pixels = np.stack([image.pixels for image in images])
    outputs, stats = await run_model(scope, model, signature, pixels, announced=len(uploads))
    return Inference(images, outputs, stats, decode_seconds)


async def run_model(
    scope: RequestScope,
    model: LoadedModel,
    signature: str,
    images: np.ndarray,
    announced: int = 0,
) -> tuple[dict[str, np.ndarray], BatchStats]:
    """Queue images for one signature; full queues answer 503, passed deadlines 504.

    A request whose deadline passed while it was read or decoded is not queued at all.
    """
    scope.settle()
    batcher = model.batchers[signature]
    left = scope.deadline - time.monotonic()
    if left <= 0:
        batcher.withdraw(announced)
        raise timed_out(
            f"the request's deadline ({scope.timeout_source}) passed before model "
            f"{model.name!r} could run it; send fewer or smaller images, or allow more time"
        )
    try:
        return await batcher.submit(images, left, announced=announced)
    except QueueFullError as error:
        raise overloaded(model, error) from None
    except DeadlineExceededError as error:
        raise timed_out(
            f"model {model.name!r} did not answer within the request's deadline "
            f"({scope.timeout_source}): {error}"
        ) from None
    except BatchSizeMismatchError as error:
        raise ApiError(500, f"model {model.name!r} returned a malformed batch: {error}") from None


def overloaded(model: LoadedModel, error: QueueFullError) -> ApiError:
    message = f"model {model.name!r} is overloaded ({error}); retry shortly"
    return unavailable(message, retry_after=1)


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


def one_image(count_: int) -> None:
    if count_ != 1:
        raise unprocessable(f"feature-maps takes exactly one image; this request has {count_}")


TIMEOUT_HEADER = "X-Request-Timeout-Ms"
# Protocol requests name their signature inside the body; until it is read they are admitted
# against the classification queue, the one nearly all of them use.
ADMISSION = "serving_default"


def request_timeout(request: Request, limit: float) -> tuple[float, str]:
    """The request's time budget in seconds, and where it came from.

    ``X-Request-Timeout-Ms`` may shorten the server's ``request_timeout_s``, never lengthen it.
    """
    text = request.headers.get(TIMEOUT_HEADER)
    if text is None:
        return limit, f"{limit:g} s, the server's request_timeout_s"
    try:
        asked = float(text) / 1000.0
    except ValueError:
        asked = math.nan
    if not math.isfinite(asked) or asked <= 0:
        raise bad_request(
            f"{TIMEOUT_HEADER} must be a positive number of milliseconds, not {text!r}",
            header=TIMEOUT_HEADER,
        )
    if asked >= limit:
        return limit, f"{limit:g} s, the server's request_timeout_s ({TIMEOUT_HEADER} asked more)"
    return asked, f"{text} ms from {TIMEOUT_HEADER}"


class RequestScope:
    """One inference request: its deadline, the model versions it holds, its final count.

    The deadline starts when the handler does, so reading and decoding spend from it too.
    """

    def __init__(self, request: Request, name: str, endpoint: str) -> None:
        self.state = app_state(request)
        self.name, self.endpoint = name, endpoint
        self.held: list[LoadedModel] = []
        self.admitted: list[Batcher] = []
        self.started = time.monotonic()
        self._request = request
        self.timeout: float = self.state.settings.request_timeout_s
        self.timeout_source = "request_timeout_s"

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    def hold(self, model: LoadedModel) -> LoadedModel:
        """Keep ``model`` loaded until this request is answered (hot reload waits for it)."""
        model.leases += 1
        self.held.append(model)
        return model

    def admit(self, model: LoadedModel, signature: str) -> None:
        """Hold a place in the signature's queue while the body is read; 503 when it is full."""
        batcher = model.batchers[signature]
        try:
            batcher.admit()
        except QueueFullError as error:
            raise overloaded(model, error) from None
        self.admitted.append(batcher)

    def settle(self) -> None:
        """The body is read: give back the held places (the images are announced instead)."""
        for batcher in self.admitted:
            batcher.withdraw(1)
        self.admitted.clear()

    async def __aenter__(self) -> RequestScope:
        try:
            self.timeout, self.timeout_source = request_timeout(
                self._request, self.state.settings.request_timeout_s
            )
        except ApiError as error:
            count(self.state, self.name, self.endpoint, error.status)
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: object
    ) -> None:
        self.settle()
        for model in self.held:
            model.leases -= 1
        if kind is None:
            count(self.state, self.name, self.endpoint, 200)
        elif isinstance(error, ApiError):
            count(self.state, self.name, self.endpoint, error.status)
        elif isinstance(error, Exception):
            count(self.state, self.name, self.endpoint, 500)


@asynccontextmanager
async def protocol_status_codes() -> AsyncIterator[None]:
    """TF Serving and KServe answer 400 (invalid argument) where the native API says 415/422."""
    try:
        yield
    except ApiError as error:
        if error.status in (415, 422):
            error.status = 400
        raise


def parse_version(text: str | None) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or int(text) < 1:
        raise bad_request(f"version {text!r} must be a positive integer")
    return int(text)


def stage_timings(decode: float, stats: BatchStats, encode_started: float) -> dict[str, float]:
    """Seconds per stage of one request; encoding ends now."""
    return {
        "decode": decode,
        "queue": stats.queue_seconds,
        "compute": stats.compute_seconds,
        "encode": time.perf_counter() - encode_started,
    }
