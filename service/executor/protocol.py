"""The wire between front ends and the executor: small JSON messages with raw bytes beside them.

A frame is ``<u32 header length><u32 payload length><header JSON><payload>``. Headers are small
dicts (orjson); tensors travel in a shared-memory arena and are addressed by offset and size
(see ``arena.py``), or, when the arena is full, as the frame's raw payload. Nothing is pickled.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson

from service.inference.errors import (
    BatchSizeMismatchError,
    DeadlineExceededError,
    InferenceError,
    ModelLoadError,
    ModelNotFoundError,
    ModelNotReadyError,
    NoExplanationsError,
    QueueFullError,
    UnknownSignatureError,
)
from service.sockets import send_now, socket_fd

PREFIX = struct.Struct("<II")
ERRORS: dict[str, type[InferenceError]] = {
    error.__name__: error
    for error in (
        BatchSizeMismatchError,
        DeadlineExceededError,
        ModelLoadError,
        ModelNotFoundError,
        ModelNotReadyError,
        QueueFullError,
        NoExplanationsError,
        UnknownSignatureError,
    )
}
Handler = Callable[[dict[str, Any], memoryview], None]


def frame(header: dict[str, Any], payload: bytes | memoryview = b"") -> bytes:
    encoded = orjson.dumps(header)
    return PREFIX.pack(len(encoded), len(payload)) + encoded + bytes(payload)


def error_header(request_id: int, error: BaseException) -> dict[str, Any]:
    """A reply saying what went wrong: the engine's own errors by name, anything else as such."""
    name = type(error).__name__
    if name not in ERRORS:
        name, error = "unexpected", RuntimeError(f"the model executor failed: {name}: {error}")
    return {"id": request_id, "error": name, "message": str(error)}


def raise_error(header: dict[str, Any]) -> None:
    """Raise the error a reply carries, as the in-process engine would have raised it."""
    raise ERRORS.get(header["error"], RuntimeError)(header["message"])


def pack_arrays(
    arrays: dict[str, np.ndarray], memory: memoryview | None, block: tuple[int, int] | None
) -> tuple[list[list[Any]], bytes]:
    """Describe ``arrays`` and put their bytes in ``block`` of ``memory`` when they fit.

    Returns one ``[name, dtype, shape, offset]`` per array (offset None: in the payload) and the
    payload. The receiver checks nothing it did not allocate itself.
    """
    total = sum(array.nbytes for array in arrays.values())
    specs: list[list[Any]] = []
    if memory is not None and block is not None and total <= block[1]:
        offset = block[0]
        for name, array in arrays.items():
            target = np.frombuffer(memory, array.dtype, array.size, offset).reshape(array.shape)
            np.copyto(target, array)
            specs.append([name, array.dtype.str, list(array.shape), offset])
            offset += array.nbytes
        return specs, b""
    chunks = []
    for name, array in arrays.items():
        specs.append([name, array.dtype.str, list(array.shape), None])
        chunks.append(np.ascontiguousarray(array).tobytes())
    return specs, b"".join(chunks)


def unpack_arrays(
    specs: list[list[Any]], memory: memoryview | None, payload: memoryview
) -> dict[str, np.ndarray]:
    """The arrays :func:`pack_arrays` described: views into ``memory`` or copies of the payload."""
    arrays = {}
    position = 0
    for name, dtype, shape, offset in specs:
        count = math.prod(shape)
        if offset is None:
            array = np.frombuffer(payload, dtype, count, position).reshape(shape).copy()
            position += array.nbytes
        else:
            if memory is None:
                raise ValueError("an array in shared memory, but no arena is attached")
            array = np.frombuffer(memory, dtype, count, offset).reshape(shape)
        arrays[name] = array
    return arrays


class FrameProtocol(asyncio.Protocol):
    """Split a byte stream into frames and hand each to ``handler`` (header, payload)."""

    def __init__(self, handler: Handler, on_lost: Callable[[], None]) -> None:
        self._handler = handler
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()  # the transport's, for every send
        self._fd = socket_fd(transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= PREFIX.size:
            header_length, payload_length = PREFIX.unpack_from(buffer, start)
            end = start + PREFIX.size + header_length + payload_length
            if len(buffer) < end:
                break
            body = start + PREFIX.size
            header = orjson.loads(buffer[body : body + header_length])
            payload = memoryview(bytes(buffer[body + header_length : end]))
            start = end
            self._handler(header, payload)
        if start:
            del buffer[:start]

    def send(self, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
        """Queue a frame; every frame queued in one turn of the event loop leaves in one write."""
        if self.transport is None or self.transport.is_closing():
            return
        self._outgoing.append(frame(header, payload))
        if len(self._outgoing) == 1 and self._loop is not None:
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the queued frames now (at the latest, the end of this turn does)."""
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and self.transport is not None and not self.transport.is_closing():
            send_now(self.transport, self._fd, outgoing)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._on_lost()
