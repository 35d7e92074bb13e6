"""A request's hold on a model, seen from a front end: looked up here, run in the executor.

Everything before the run is answered from the executor's snapshot, without a round trip: the
model and version exist and serve, the signature is offered, the queue has room. The run is
one message each way; the images and outputs travel through the arena.
"""

from __future__ import annotations

import numpy as np

from convbridge.card import ModelCard
from convbridge.signatures import CLASSIFY, FEATURE_MAPS, SIGNATURES
from service.executor.client import RemoteEngine
from service.executor.protocol import unpack_arrays
from service.inference import ModelInfo, Result, State
from service.inference.batch import BatchStats
from service.inference.errors import queue_full, unknown_signature
from service.inference.status import not_serving


class RemoteLease:
    """The Lease of the in-process engine, for a model in the executor.

    Entering checks what the snapshot knows (ModelNotFoundError, ModelNotReadyError,
    UnknownSignatureError, and QueueFullError while the executor says the queue is full), so
    an overloaded model refuses before the body is read. Only a version that is not loaded
    (an older one named by the client) costs a round trip, to load it. Unlike the in-process
    lease, it holds no place in the queue while the body arrives: a slow upload takes nothing
    from other clients.
    """

    def __init__(self, engine: RemoteEngine, name: str, version: int | None, signature: str):
        self._engine = engine
        self._name, self._version, self._signature = name, version, signature
        self._blocks: list[tuple[int, int]] = []
        self.model: ModelInfo

    async def __aenter__(self) -> RemoteLease:
        engine, name = self._engine, self._name
        status = engine.status(name, self._version)
        number = self._version if self._version is not None else status.served_version
        entry = status.version(number) if number is not None else None
        if entry is not None and entry.state is State.READY and entry.card and status.device:
            self.model = ModelInfo(name, entry.version, status.device, entry.card)
        elif self._version is None:
            raise not_serving(status)
        else:  # not loaded: the executor loads it on demand, as the in-process engine does
            self.model = await engine.model(name, self._version)
        self._check(self._signature)
        return self

    def _check(self, signature: str) -> None:
        model = self.model
        offered = [name for name in model.card.signatures if name in SIGNATURES]
        if signature not in offered:
            raise unknown_signature(model.name, model.version, signature, offered)
        if (model.name, model.version, signature) in self._engine.full:
            limit = self._engine.settings.max_queue_images
            raise queue_full(limit, limit)

    def expect(self, count: int) -> None:
        """Nothing to tell: the executor learns of the images when they arrive."""

    async def run(self, images: np.ndarray, timeout: float, signature: str | None = None) -> Result:
        signature = signature or self._signature
        if signature != self._signature:
            self._check(signature)
        engine, arena = self._engine, self._engine.arena
        images = np.ascontiguousarray(images)
        size = max(images.nbytes, _output_bytes(self.model.card, signature, len(images)))
        block = arena.allocate(size) if arena is not None else None
        header = {
            "op": "infer",
            "model": self._name,
            "version": self._version,
            "expect": self.model.version,
            "signature": signature,
            "timeout": timeout,
            "shape": list(images.shape),
            "dtype": images.dtype.str,
            "block": list(block) if block is not None else None,
            "inline": block is None,
        }
        payload: bytes | memoryview = b""
        if block is not None and arena is not None:
            self._blocks.append(block)
            target = np.frombuffer(arena.memory, images.dtype, images.size, block[0])
            target[:] = images.ravel()
        else:
            payload = images.data.cast("B")
        # The executor answers within the deadline (or not at all: it then drops the work, so
        # nothing writes into the block once it is freed); the margin covers the trip back.
        reply, data = await engine._call(header, payload, timeout=timeout + 1.0)
        if "model" in reply:  # a hot reload replaced the version between lookup and run
            self.model = engine._info(reply)
        memory = arena.memory if arena is not None else None
        outputs = unpack_arrays(reply["outputs"], memory, data)
        queue, compute, batch = reply["stats"]
        return Result(outputs, BatchStats(queue, compute, int(batch)))

    async def __aexit__(self, *exc_info: object) -> None:
        arena = self._engine.arena
        if arena is not None:
            for block in self._blocks:
                arena.free(block)
        self._blocks.clear()


def _output_bytes(card: ModelCard, signature: str, count: int) -> int:
    """Room for the outputs of ``signature`` (float32, as the model card describes them)."""
    if signature == CLASSIFY:
        return count * len(card.classes) * 4
    if signature == FEATURE_MAPS:
        return count * sum(int(np.prod(layer.shape)) for layer in card.layers) * 4
    return 0
