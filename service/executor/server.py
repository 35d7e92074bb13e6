"""The executor's side of the wire: one Engine, served to every front end over a Unix socket."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import generate_latest

from service.executor.arena import AttachedArena
from service.executor.protocol import FrameProtocol, error_header, pack_arrays
from service.executor.snapshot import encode_snapshot
from service.inference import Engine, InferenceError, Lease, ModelInfo, ModelNotReadyError

log = logging.getLogger("convbridge.executor")


class ExecutorServer:
    """Accept front ends, run their requests on the engine, tell them when models change."""

    def __init__(self, engine: Engine, socket_path: Path) -> None:
        self.engine = engine
        self.socket_path = socket_path
        self.connections: set[_Connection] = set()
        self._server: asyncio.AbstractServer | None = None
        self._push_pending = False
        engine.on_change = self._changed

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

    def _push(self) -> None:
        self._push_pending = False
        header = {"op": "snapshot", "snapshot": self.snapshot()}
        for connection in self.connections:
            connection.protocol.send(header)


class _Connection:
    """One front end: its arena, its leases, and the requests it has under way."""

    def __init__(self, server: ExecutorServer) -> None:
        self.server = server
        self.engine = server.engine
        self.protocol = FrameProtocol(self._received, self._lost)
        self.arena: AttachedArena | None = None
        self.leases: dict[int, Lease] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        server.connections.add(self)

    def _received(self, header: dict[str, Any], payload: memoryview) -> None:
        op = header["op"]
        if op == "expect":
            lease = self.leases.get(header["lease"])
            if lease is not None:
                lease.expect(header["count"])
            return
        handler = getattr(self, f"_{op}", None)
        if handler is None:
            log.error("unknown message %r from a front end", op)
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
            if "id" in header:
                self.protocol.send(error_header(header["id"], error))
            return
        if reply is not None:
            self.protocol.send({"id": header["id"], **reply}, data)

    async def _hello(self, header: dict[str, Any], _: memoryview) -> tuple[Any, bytes]:
        if header.get("arena"):
            self.arena = AttachedArena(header["arena"], header["size"])
        return {"snapshot": self.server.snapshot()}, b""

    async def _reserve(self, header: dict[str, Any], _: memoryview) -> tuple[Any, bytes]:
        lease = self.engine.reserve(header["model"], header["version"], header["signature"])
        await lease.__aenter__()
        number = next(self._ids)
        self.leases[number] = lease
        return {"lease": number, **_describe(lease.model, header.get("card", False))}, b""

    async def _run(self, header: dict[str, Any], payload: memoryview) -> tuple[Any, bytes]:
        lease = self.leases.get(header["lease"])
        if lease is None:  # reserved from an executor that has died since
            raise ModelNotReadyError("the model executor restarted during the request; retry")
        memory = self.arena.memory if self.arena is not None else None
        block = self.arena.check(header["block"]) if self.arena is not None else None
        shape, dtype = header["shape"], np.dtype(header["dtype"])
        count = int(np.prod(shape))
        if header["inline"]:
            images = np.frombuffer(payload, dtype, count).reshape(shape)
        else:
            assert memory is not None and block is not None, "images in an arena never attached"
            if count * dtype.itemsize > block[1]:
                raise ValueError("the images do not fit the block they were sent in")
            images = np.frombuffer(memory, dtype, count, block[0]).reshape(shape)
        result = await lease.run(images, header["timeout"], header["signature"])
        specs, data = pack_arrays(result.outputs, memory, block)
        stats = result.stats
        return {
            "outputs": specs,
            "stats": [stats.queue_seconds, stats.compute_seconds, stats.batch_size],
        }, data

    async def _release(self, header: dict[str, Any], _: memoryview) -> tuple[Any, bytes]:
        lease = self.leases.pop(header["lease"], None)
        if lease is not None:
            await lease.__aexit__(None, None, None)
        return None, b""

    async def _model(self, header: dict[str, Any], _: memoryview) -> tuple[Any, bytes]:
        model = await self.engine.model(header["model"], header["version"])
        return _describe(model, True), b""

    async def _metrics(self, header: dict[str, Any], _: memoryview) -> tuple[Any, bytes]:
        return {}, generate_latest(self.engine.metrics.registry)

    def _lost(self) -> None:
        """The front end is gone: its requests stop waiting and its leases are given back."""
        self.server.connections.discard(self)
        for task in self._tasks:
            task.cancel()
        leases, self.leases = self.leases, {}
        for lease in leases.values():
            asyncio.get_running_loop().create_task(lease.__aexit__(None, None, None))
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
