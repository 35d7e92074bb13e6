"""The executor's side of the wire: one Engine, served to every front end over a Unix socket."""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import generate_latest

from service.executor.arena import AttachedArena
from service.executor.protocol import FrameProtocol, error_header, pack_arrays
from service.executor.snapshot import encode_snapshot
from service.inference import Engine, InferenceError, ModelInfo, ModelNotReadyError
from service.inference.signatures import extra_inputs

log = logging.getLogger("convbridge.executor")


class ExecutorServer:
    """Accept front ends, run their requests on the engine, tell them when models change."""

    def __init__(self, engine: Engine, socket_path: Path) -> None:
        self.engine = engine
        self.socket_path = socket_path
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._push_pending = False
        self._full: set[tuple[str, int, str]] = set()
        engine.on_change = self._changed
        engine.on_pressure = self._pressure

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.socket_path.unlink(missing_ok=True)
        self._server = await loop.create_unix_server(
            lambda: _Connection(self).protocol, str(self.socket_path)
        )
        log.info("executor listening on %s", self.socket_path)

    async def stop(self) -> None:
        """Stop accepting, let queued work finish, then close every connection."""
        if self._server is not None:
            self._server.close()
        await self.engine.close()
        for connection in list(self.connections):
            connection.close()

    def snapshot(self) -> dict[str, Any]:
        return encode_snapshot(self.engine)

    def _changed(self) -> None:
        """Push one snapshot after a burst of changes (a load changes several things at once)."""
        if not self._push_pending:
            self._push_pending = True
            asyncio.get_running_loop().call_soon(self._push)

    def _loaded(self, name: str, version: int) -> bool:
        try:
            return version in self.engine.status(name).ready_versions
        except InferenceError:
            return False

    def full(self) -> list[tuple[str, int, str]]:
        """The queues (model, version, signature) that have no room for one more image."""
        return sorted(self._full)

    def _pressure(self, name: str, version: int, signature: str, full: bool) -> None:
        """Tell the front ends at once: they refuse requests for a full queue before reading
        their bodies (the queue itself still refuses what does not fit)."""
        key = (name, version, signature)
        if full:
            self._full.add(key)
        else:
            self._full.discard(key)
        header = {"op": "pressure", "queue": list(key), "full": full}
        for connection in self.connections:
            connection.protocol.send(header)

    def _push(self) -> None:
        self._push_pending = False
        self._full = {key for key in self._full if self._loaded(*key[:2])}
        header = {"op": "snapshot", "snapshot": self.snapshot()}
        for connection in self.connections:
            connection.protocol.send(header)


class _Connection:
    """One front end: its arena, and the requests it has under way."""

    def __init__(self, server: ExecutorServer) -> None:
        self.server = server
        self.engine = server.engine
        self.protocol = FrameProtocol(self._received, self._lost)
        self.arena: AttachedArena | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        server.connections.add(self)

    def _received(self, header: dict[str, Any], payload: memoryview) -> None:
        handler = getattr(self, f"_{header['op']}", None)
        if handler is None:
            log.error("unknown message %r from a front end", header["op"])
            return
        task = asyncio.get_running_loop().create_task(self._answer(handler, header, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, handler: Any, header: dict[str, Any], payload: memoryview) -> None:
        try:
            reply, data = await handler(header, payload)
        except Exception as error:  # every failure reaches its request
            if not isinstance(error, InferenceError):  # a bug: its traceback belongs here
                log.exception("%s failed in the executor", header["op"])
            self.protocol.send(error_header(header["id"], error))
            return
        self.protocol.send({"id": header["id"], **reply}, data)
        if header.get("alone"):
            self.protocol.flush()  # no other reply to this front end is coming to share it

    async def _hello(self, header: dict[str, Any], _: memoryview) -> tuple[Any, bytes]:
        if header.get("arena"):
            self.arena = AttachedArena(header["arena"], header["size"])
        return {"snapshot": self.server.snapshot(), "full": self.server.full()}, b""

    async def _infer(self, header: dict[str, Any], payload: memoryview) -> tuple[Any, bytes]:
        """One request's images through one signature, from lookup to outputs in one message.

        ``version`` is None unless the client named one: the served version answers, and the
        reply carries its card when it is not the one the front end decoded for (``expect``,
        replaced by a hot reload meanwhile).
        """
        name, signature = header["model"], header["signature"]
        block = self.arena.check(header["block"]) if self.arena is not None else None
        async with self.engine.reserve(name, header["version"], signature) as lease:
            images = self._images(header, payload, block)
            model = lease.model
            if images.shape[1:] != model.card.input.shape:
                raise ModelNotReadyError(
                    f"model {name!r} changed to version {model.version}, which takes "
                    f"{list(model.card.input.shape)} images, during the request; retry"
                )
            types = extra_inputs(signature)
            extra = {
                name: np.asarray(values, dtype=types[name])
                for name, values in header.get("extra", {}).items()
            }
            if set(extra) != set(types) or any(len(v) != len(images) for v in extra.values()):
                raise ValueError(f"{signature} needs {sorted(types)}, one per image")
            result = await lease.run(
                images, header["timeout"], signature, extra, header.get("alone", False)
            )
        memory = self.arena.memory if self.arena is not None else None
        specs, data = pack_arrays(result.outputs, memory, block)
        stats = result.stats
        reply = {
            "outputs": specs,
            "stats": [stats.queue_seconds, stats.compute_seconds, stats.batch_size],
        }
        if model.version != header["expect"]:
            reply.update(_describe(model, True))
        return reply, data

    def _images(
        self, header: dict[str, Any], payload: memoryview, block: tuple[int, int] | None
    ) -> np.ndarray:
        shape, dtype = header["shape"], np.dtype(header["dtype"])
        count = math.prod(shape)
        if header["inline"]:
            return np.frombuffer(payload, dtype, count).reshape(shape)
        assert self.arena is not None and block is not None, "images in an arena never attached"
        if count * dtype.itemsize > block[1]:
            raise ValueError("the images do not fit the block they were sent in")
        return np.frombuffer(self.arena.memory, dtype, count, block[0]).reshape(shape)

    async def _model(self, header: dict[str, Any], _: memoryview) -> tuple[Any, bytes]:
        model = await self.engine.model(header["model"], header["version"])
        return _describe(model, True), b""

    async def _metrics(self, header: dict[str, Any], _: memoryview) -> tuple[Any, bytes]:
        return {}, generate_latest(self.engine.metrics.registry)

    def _lost(self) -> None:
        """The front end is gone: its requests stop waiting, which gives their leases back."""
        self.server.connections.discard(self)
        for task in self._tasks:
            task.cancel()
        if self.arena is not None:
            self.arena.close()

    def close(self) -> None:
        if self.protocol.transport is not None:
            self.protocol.transport.close()


def _describe(model: ModelInfo, with_card: bool) -> dict[str, Any]:
    described: dict[str, Any] = {"model": [model.name, model.version, model.device]}
    if with_card:
        described["card"] = model.card.to_dict()
    return described
