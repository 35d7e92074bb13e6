"""A lease held in the executor on a front end's behalf: images out, outputs back, via the arena."""

from __future__ import annotations

import contextlib

import numpy as np

from convbridge.card import ModelCard
from convbridge.signatures import CLASSIFY, FEATURE_MAPS
from service.executor.client import RemoteEngine
from service.executor.protocol import unpack_arrays
from service.inference import ModelInfo, ModelNotReadyError, Result
from service.inference.batch import BatchStats


class RemoteLease:
    """The Lease of the in-process engine, held in the executor on this front end's behalf."""

    def __init__(self, engine: RemoteEngine, name: str, version: int | None, signature: str):
        self._engine = engine
        self._name, self._version, self._signature = name, version, signature
        self._number: int | None = None
        self._blocks: list[tuple[int, int]] = []
        self.model: ModelInfo

    async def __aenter__(self) -> RemoteLease:
        engine = self._engine
        engine.status(self._name, self._version)
        known = self._known_card()
        request = {"op": "reserve", "model": self._name, "version": self._version}
        reply, _ = await engine._call({**request, "signature": self._signature, "card": not known})
        self._number = reply["lease"]
        self.model = engine._info(reply)
        return self

    def _known_card(self) -> bool:
        status = self._engine.snapshot.models.get(self._name)
        if status is None:
            return False
        version = self._version or status.served_version
        entry = status.version(version) if version is not None else None
        return entry is not None and entry.card is not None

    def expect(self, count: int) -> None:
        with contextlib.suppress(ModelNotReadyError):
            self._engine._send({"op": "expect", "lease": self._number, "count": count})

    async def run(self, images: np.ndarray, timeout: float, signature: str | None = None) -> Result:
        signature = signature or self._signature
        engine, arena = self._engine, self._engine.arena
        images = np.ascontiguousarray(images)
        size = max(images.nbytes, _output_bytes(self.model.card, signature, len(images)))
        block = arena.allocate(size) if arena is not None else None
        header = {
            "op": "run",
            "lease": self._number,
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
        memory = arena.memory if arena is not None else None
        outputs = unpack_arrays(reply["outputs"], memory, data)
        queue, compute, batch = reply["stats"]
        return Result(outputs, BatchStats(queue, compute, int(batch)))

    async def __aexit__(self, *exc_info: object) -> None:
        if self._number is not None:
            with contextlib.suppress(ModelNotReadyError):
                self._engine._send({"op": "release", "lease": self._number})
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
