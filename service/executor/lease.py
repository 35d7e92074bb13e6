"""A request's hold on a model, seen from a front end: looked up here, run in the executor.

Everything before the run is answered from the executor's snapshot, without a round trip: the
model and version exist and serve, the signature is offered, the queue has room. The run is
one message each way, shared with the requests for the same queue that reached it in the same
turn of the event loop (gathering.py); images and outputs travel through the arena.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from convbridge.card import ModelCard
from convbridge.signatures import CLASSIFY, EXPLAIN, FEATURE_MAPS
from service.executor.client import RemoteEngine
from service.inference import ModelInfo, Result, State
from service.inference.errors import queue_full, unknown_signature
from service.inference.signatures import served_signatures
from service.inference.status import not_serving


class RemoteLease:
    """The Lease of the in-process engine, for a model in the executor.

    Entering checks what the snapshot knows (ModelNotFoundError, ModelNotReadyError,
    UnknownSignatureError, and QueueFullError while the executor says the queue is full), so
    an overloaded model refuses before the body is read. Only a version that is not loaded
    (an older one named by the client) costs a round trip, to load it. While the body
    arrives it holds no place at all; once the request knows its images (:meth:`expect`) they
    count against this front end's own bound (``max_queue_images`` per queue, until the
    answer), which keeps the images decoded and waiting here bounded under overload.
    """

    def __init__(self, engine: RemoteEngine, name: str, version: int | None, signature: str):
        self._engine = engine
        self._name, self._version, self._signature = name, version, signature
        self.model: ModelInfo
        self._key: tuple[str, int, str] | None = None  # where this request's places count
        self._held = 0

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
        key = (name, self.model.version, self._signature)
        limit = engine.settings.max_queue_images
        pending = engine.pending.get(key, 0)
        if pending >= limit:  # this front end's own bound on work between admission and answer
            raise queue_full(pending, limit)
        # No place is taken yet: a body still arriving (however slowly) holds none, so slow
        # uploads cannot fill the queue; its images count from :meth:`expect` on.
        self._key, self._held = key, 0
        engine.pending.setdefault(key, 0)
        engine.leases += 1
        return self

    def _check(self, signature: str) -> None:
        model = self.model
        offered = list(served_signatures(model.card))
        if signature not in offered:
            raise unknown_signature(model.name, model.version, signature, offered)
        if (model.name, model.version, signature) in self._engine.full:
            limit = self._engine.settings.max_queue_images
            raise queue_full(limit, limit)

    def expect(self, count: int) -> None:
        """The request carries ``count`` images: they count against this front end's bound."""
        self._hold(count)

    def _hold(self, count: int) -> None:
        if self._key is not None:
            self._engine.pending[self._key] += count - self._held
            self._held = count

    async def run(
        self,
        images: np.ndarray,
        timeout: float,
        signature: str | None = None,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> Result:
        signature = signature or self._signature
        if signature != self._signature:
            self._check(signature)
        key = (
            self._name,
            self._version,
            self.model.version,
            signature,
            images.shape[1:],
            images.dtype.str,
        )
        per_image = _output_bytes(self.model.card, signature)
        outputs, stats, reply = await self._engine.gatherer.infer(
            key, images, timeout, per_image, extra or {}
        )
        if "model" in reply:  # a hot reload replaced the version between lookup and run
            self.model = self._engine._info(reply)
        return Result(outputs, stats)

    async def __aexit__(self, *exc_info: object) -> None:
        """Give back this request's places (the arena block was freed with its answer)."""
        if self._key is not None:
            self._engine.leases -= 1
        self._hold(0)
        self._key = None


def _output_bytes(card: ModelCard, signature: str) -> int:
    """Room for one image's outputs of ``signature`` (float32, as the card describes them)."""
    if signature == CLASSIFY:
        return len(card.classes) * 4
    if signature == FEATURE_MAPS:
        return sum(int(np.prod(layer.shape)) for layer in card.layers) * 4
    if signature == EXPLAIN:  # heatmap at the input's size, class index and score
        height, width, _ = card.input.shape
        return (height * width + 2) * 4
    return 0
