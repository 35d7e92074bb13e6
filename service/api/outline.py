"""The outline every inference route follows, native, TF Serving and KServe alike.

    async with InferenceCall(request, name, "classify") as call:
        lease = await call.reserve(version, CLASSIFY)   # model, lease, queue place: 404/503
        images = await call.decode(uploads)             # or: await call.parse(parser, ...)
        result = await call.run(pixels)                 # the engine's batcher: 503/504
        ...build the answer...                          # timed as "encode"
        return call.respond(response)                   # Server-Timing, X-Model-Version, metrics

The call owns the deadline, the stage timings, the mapping of the engine's errors to statuses
and the final outcome count, so each route states only what differs: how it reads its input
and how it writes its answer.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import Request
from starlette.responses import Response

from service.api.deps import AppContext, app_context
from service.api.uploads import Upload
from service.codecs.images import (
    INLINE_PIXELS,
    DecodedImage,
    ImageError,
    finish_decoding,
    open_image,
    pixel_count,
)
from service.errors import (
    ApiError,
    bad_request,
    not_found,
    timed_out,
    unavailable,
    unprocessable,
)
from service.inference import (
    BatchSizeMismatchError,
    DeadlineExceededError,
    ModelNotFoundError,
    ModelNotReadyError,
    NoExplanationsError,
    QueueFullError,
    Result,
    UnknownSignatureError,
)
from service.inference.interface import LeaseLike
from service.metrics import STAGES
from service.web.responses import server_timing

T = TypeVar("T")
TIMEOUT_HEADER = "X-Request-Timeout-Ms"


@dataclass(frozen=True)
class Caller:
    """A call that did not come as an HTTP request (gRPC): the app's context, and the one
    header an inference call reads (``X-Request-Timeout-Ms``, from the call's deadline)."""

    context: AppContext
    headers: Mapping[str, str]


# A REST protocol body or answer of up to this many bytes is parsed or encoded on the event
# loop, larger ones on the decoder threads. Parsing TF Serving's JSON costs about 16 us a KiB
# (one 32x32x3 image as pixel lists: 12-15 KB, 0.2-0.25 ms), and the trip through a thread,
# whose Python contends for the GIL with the loop's, cost a front end more than the work did:
# `gap` c=64, one front end, TF Serving JSON 1,124 -> 1,571 requests/s, KServe JSON 1,478 ->
# 2,056. The limit keeps the loop's longest step near a decoded image's (INLINE_PIXELS): about
# half a millisecond. gRPC's messages stay on the threads: inline, ModelInfer at c=32 answered
# 5-20% less in each of five alternated rounds (benchmarks/protocols.py), for no gain alone.
INLINE_BYTES = 32 * 1024


class InferenceCall:
    """One inference request from its route to its answer; an async context manager.

    The deadline starts when the handler does, so reading and decoding spend from it too.
    ``protocol=True`` (TF Serving, KServe) answers 400 where the native API says 415 or 422.
    """

    def __init__(self, request: Request | Caller, name: str, endpoint: str, protocol: bool = False):
        if isinstance(request, Caller):
            self.context, self.transport = request.context, "grpc"
        else:
            self.context, self.transport = app_context(request), "rest"
        self.name, self.endpoint, self.protocol = name, endpoint, protocol
        self.started = time.monotonic()
        self.timeout = self.context.settings.request_timeout_s
        self.timeout_source = "request_timeout_s"
        self.lease: LeaseLike | None = None
        self._request = request
        self._reserved: AbstractAsyncContextManager[LeaseLike] | None = None
        self._seconds = dict.fromkeys(STAGES, 0.0)
        self._encode_started: float | None = None
        self._timings: dict[str, float] | None = None

    async def __aenter__(self) -> InferenceCall:
        try:
            self.timeout, self.timeout_source = request_timeout(
                self._request.headers, self.context.settings.request_timeout_s
            )
        except ApiError as error:
            self._count(error.status)
            raise
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: Any, _: object) -> None:
        if self._reserved is not None:  # given back first, as an exit stack would
            await self._reserved.__aexit__(None, None, None)
        if (
            isinstance(error, ApiError)
            and self.protocol
            and error.status in (415, 422)
            and not error.keeps_status
        ):
            error.status = 400
        if kind is None:
            self._count(200)
        elif isinstance(error, ApiError):
            self._count(error.status)
        elif isinstance(error, Exception):
            self._count(500)

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    async def reserve(self, version: int | None, signature: str) -> LeaseLike:
        """Hold the model version and a place in ``signature``'s queue until the answer."""
        lease = self.context.engine.reserve(self.name, version, signature)
        with engine_errors(self.name, self.timeout_source):
            self.lease = await lease.__aenter__()
        self._reserved = lease
        return lease

    async def decode(self, uploads: list[Upload]) -> list[DecodedImage]:
        """Decode every upload; the batcher waits for the images.

        Headers are read here (sizes are checked before any pixel is decoded). Small requests
        are decoded on the event loop, as a trip to a thread would cost more than the work;
        larger ones fan out on the decoder threads.
        """
        lease = self._held()
        lease.expect(len(uploads))
        card = lease.model.card
        height, width, _ = card.input.shape
        limit = self.context.settings.max_image_pixels
        started = time.perf_counter()
        opened = [
            _image_error(index, upload, open_image, upload.data, limit)
            for index, upload in enumerate(uploads)
        ]
        arguments = ((height, width), card.input.channels, limit)
        if sum(pixel_count(image) for image in opened) <= INLINE_PIXELS:
            decoded = [
                _image_error(index, upload, finish_decoding, image, *arguments)
                for index, (image, upload) in enumerate(zip(opened, uploads, strict=True))
            ]
        else:
            loop = asyncio.get_running_loop()
            jobs = [
                loop.run_in_executor(self.context.decoder, finish_decoding, image, *arguments)
                for image in opened
            ]
            results = await asyncio.gather(*jobs, return_exceptions=True)
            decoded = [
                _image_error(index, upload, _unwrap, result)
                for index, (result, upload) in enumerate(zip(results, uploads, strict=True))
            ]
        self._seconds["decode"] += time.perf_counter() - started
        return decoded

    async def parse(self, parser: Callable[..., T], *args: Any, size: int | None = None) -> T:
        """Turn a protocol body of ``size`` bytes into arrays, timed as decoding: on the event
        loop up to :data:`INLINE_BYTES`, on the decoder threads above or when the size is not
        given (gRPC's messages, see INLINE_BYTES)."""
        started = time.perf_counter()
        parsed = await self._offload(size, parser, *args)
        self._seconds["decode"] += time.perf_counter() - started
        return parsed

    async def run(
        self,
        images: np.ndarray,
        signature: str | None = None,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> Result:
        """Run the images through the model; a request out of time is not queued at all.

        ``extra``: the signature's other inputs, one row per image (explain's ``class_index``).
        """
        lease = self._held()
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise timed_out(
                f"the request's deadline ({self.timeout_source}) passed before model "
                f"{self.name!r} could run it; send fewer or smaller images, or allow more time"
            )
        lease.expect(len(images))  # the protocol routes learn their images only here
        with engine_errors(self.name, self.timeout_source):
            result = await lease.run(images, left, signature, extra)
        if not self._seconds["compute"]:
            self._seconds["queue"] = result.stats.queue_seconds
            self._seconds["compute"] = result.stats.compute_seconds
        self._encode_started = time.perf_counter()
        return result

    async def encode(self, encoder: Callable[..., T], *args: Any, size: int | None = None) -> T:
        """Build an answer from ``size`` bytes of outputs: on the event loop up to
        :data:`INLINE_BYTES`, on the decoder threads above or when the size is not given (the
        rendered images, whose cost the outputs' size does not tell)."""
        return await self._offload(size, encoder, *args)

    def timings(self) -> dict[str, float]:
        """Seconds per stage; encoding ends at the first call."""
        if self._timings is None:
            encoding = time.perf_counter() - (self._encode_started or time.perf_counter())
            self._timings = {**self._seconds, "encode": encoding}
        return self._timings

    def respond(self, response: Response) -> Response:
        """The answer, with the stage timings in its headers and in the metrics."""
        timings = self.finish()
        # Appended as MutableHeaders would add them (no route sets either): its setter scans
        # the list for each, 1.2 us of a classify request's 110 in a front end.
        response.raw_headers += [
            (b"server-timing", server_timing(timings).encode("latin-1")),
            (b"x-model-version", str(self._held().model.version).encode("latin-1")),
        ]
        return response

    def finish(self) -> dict[str, float]:
        """The stage timings, recorded in the metrics: the answer is ready."""
        timings = self.timings()
        model = self._held().model
        for stage, seconds in timings.items():
            self.context.metrics.observe_stage(model.name, model.version, stage, seconds)
        return timings

    def _held(self) -> LeaseLike:
        assert self.lease is not None, "reserve a model first"
        return self.lease

    async def _offload(self, size: int | None, function: Callable[..., T], *args: Any) -> T:
        if size is not None and size <= INLINE_BYTES:
            return function(*args)
        return await asyncio.get_running_loop().run_in_executor(
            self.context.decoder, function, *args
        )

    def _count(self, status: int) -> None:
        """Count a request for a model that exists (unknown names would make labels unbounded)."""
        if self.context.engine.knows(self.name):
            self.context.metrics.count_request(
                self.name, self.endpoint, outcome_of(status), self.transport
            )


def nbytes(arrays: Mapping[str, np.ndarray]) -> int:
    """The bytes of ``arrays``' values: the size an answer is encoded from."""
    return sum(array.nbytes for array in arrays.values())


def _image_error(index: int, upload: Upload, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)``, with an ImageError as the status it stands for, naming the image."""
    try:
        return function(*args)
    except ImageError as error:
        label = f"image {index}" + (f" ({upload.filename!r})" if upload.filename else "")
        raise ApiError(error.status, f"{label}: {error}") from None


def _unwrap(result: T | BaseException) -> T:
    if isinstance(result, BaseException):
        raise result
    return result


@contextmanager
def engine_errors(name: str, timeout_source: str = "") -> Iterator[None]:
    """Turn the engine's errors into the statuses the APIs answer with."""
    try:
        yield
    except NoExplanationsError as error:  # the model is fine; its export is older than the ask
        missing = unprocessable(str(error), fix="make models")
        missing.keeps_status = True  # 422 in every namespace: no request could succeed
        raise missing from None
    except (ModelNotFoundError, UnknownSignatureError) as error:
        raise not_found(str(error)) from None
    except ModelNotReadyError as error:
        raise unavailable(str(error), retry_after=2) from None
    except QueueFullError as error:
        raise unavailable(f"model {name!r} is overloaded ({error}); retry shortly") from None
    except DeadlineExceededError as error:
        source = f" ({timeout_source})" if timeout_source else ""
        raise timed_out(
            f"model {name!r} did not answer within the request's deadline{source}: {error}"
        ) from None
    except BatchSizeMismatchError as error:
        raise ApiError(500, f"model {name!r} returned a malformed batch: {error}") from None


def outcome_of(status: int) -> str:
    if status < 400:
        return "ok"
    return {503: "unavailable", 504: "timeout"}.get(
        status, "client_error" if status < 500 else "error"
    )


def request_timeout(headers: Mapping[str, str], limit: float) -> tuple[float, str]:
    """The request's time budget in seconds, and where it came from.

    ``X-Request-Timeout-Ms`` may shorten the server's ``request_timeout_s``, never lengthen it.
    """
    text = headers.get(TIMEOUT_HEADER)
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
