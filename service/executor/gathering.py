"""Requests for the same queue, gathered in one turn of a front end's event loop, sent as one.

Under load, a front end reaches the model call for several requests in one turn of its loop
(their bodies arrived in the same read of the sockets). Each message costs the executor's
event loop about as much as the images in it, so they travel together: one message, one lease
and one queue item in the executor, one reply, whose rows go back to their requests. A
request with nothing else under way in its front end is sent at once, marked ``alone``: the
executor then runs it at once if its batcher is idle (Batcher's ``run_idle_inline``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from service.executor.protocol import raise_error, unpack_arrays
from service.inference.batch import BatchStats
from service.inference.errors import DeadlineExceededError

if TYPE_CHECKING:
    from service.executor.client import RemoteEngine, Reply

# (model, version asked, version expected, signature, image shape, dtype)
Key = tuple[str, int | None, int, str, tuple[int, ...], str]
Answer = tuple[dict[str, np.ndarray], BatchStats, dict[str, Any]]
# The event loop's timers fire up to a millisecond early (libuv's resolution): a deadline
# that close counts as passed, rather than a timer armed again for the same instant.
_TIMER_RESOLUTION_S = 0.001


@dataclass
class _Part:
    images: np.ndarray
    timeout: float
    deadline: float  # the loop's time
    future: asyncio.Future[Answer]
    extra: Mapping[str, np.ndarray]


@dataclass
class _Group:
    """One message's requests, and one timer for their deadlines (not a timer each: a timer
    costs 2-4 us, and under load a message carries several requests)."""

    key: Key
    output_bytes: int  # per image
    loop: asyncio.AbstractEventLoop
    parts: list[_Part] = field(default_factory=list)
    images: int = 0
    timer: asyncio.TimerHandle | None = None
    expires: float = math.inf

    def add(self, part: _Part) -> None:
        self.parts.append(part)
        self.images += len(part.images)
        if part.deadline < self.expires:
            self._arm(part.deadline)

    def settle(self) -> None:
        """Answered: the deadlines are no longer watched."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _arm(self, at: float) -> None:
        self.settle()
        self.expires = at
        self.timer = self.loop.call_at(at, self._expire)

    def _expire(self) -> None:
        """Fail the requests whose deadline passed; watch for the next one."""
        self.timer, self.expires = None, math.inf
        now = self.loop.time() + _TIMER_RESOLUTION_S
        later = math.inf
        for part in self.parts:
            if part.future.done():
                continue
            if part.deadline <= now:
                message = f"no answer within {part.timeout:.3g} s"
                part.future.set_exception(DeadlineExceededError(message))
            else:
                later = min(later, part.deadline)
        if later < math.inf:
            self._arm(later)


class Gatherer:
    """Gather :meth:`infer` calls per queue until the loop turns, then send each group."""

    def __init__(self, engine: RemoteEngine, max_images: int) -> None:
        self._engine = engine
        self._max_images = max_images  # a group never grows past one full batch
        self._open: dict[Key, _Group] = {}
        self._ready: list[_Group] = []
        self._scheduled = False

    async def infer(
        self,
        key: Key,
        images: np.ndarray,
        timeout: float,
        output_bytes: int,
        extra: Mapping[str, np.ndarray],
    ) -> Answer:
        """Outputs for ``images`` (rows in order), the batch's stats, and the reply's header.

        ``extra``: the signature's other inputs, one small row per image (explain's
        ``class_index``); they travel in the message's header.

        DeadlineExceededError once ``timeout`` has passed: the group's message carries the
        longest deadline of its requests, so a shorter one is not left to the executor.
        """
        loop = self._engine.loop
        group = self._open.get(key)
        if group is None or group.images + len(images) > self._max_images:
            group = self._open[key] = _Group(key, output_bytes, loop)
            self._ready.append(group)
        part = _Part(images, timeout, loop.time() + timeout, loop.create_future(), extra)
        group.add(part)
        if self._engine.leases == len(group.parts):
            self._send_all()  # nothing else is under way here to gather: no need to wait
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send_all)
        return await part.future

    def _send_all(self) -> None:
        """Send the groups gathered so far, one frame each, in one write; the replies are
        handled as they arrive (no task, no wait per group)."""
        self._scheduled = False
        groups, self._ready, self._open = self._ready, [], {}
        for group in groups:
            parts = [part for part in group.parts if not part.future.done()]
            if not parts:
                group.settle()
                continue
            try:
                self._send(group, parts)
            except Exception as error:  # every request of the group learns of it
                group.settle()
                _fail(parts, error)
        self._engine.flush()

    def _send(self, group: _Group, parts: list[_Part]) -> None:
        engine, arena = self._engine, self._engine.arena
        name, version, expect, signature, _, _ = group.key
        images = parts[0].images if len(parts) == 1 else np.concatenate([p.images for p in parts])
        images = np.ascontiguousarray(images)
        size = max(images.nbytes, group.output_bytes * len(images))
        block = arena.allocate(size) if arena is not None else None
        timeout = max(part.timeout for part in parts)
        header: dict[str, Any] = {
            "op": "infer",
            "model": name,
            "version": version,
            "expect": expect,
            "signature": signature,
            "timeout": timeout,
            "shape": list(images.shape),
            "dtype": images.dtype.str,
            "block": list(block) if block is not None else None,
            "inline": block is None,
            "alone": engine.leases == len(parts),  # every request under way here is in it
        }
        if parts[0].extra:
            header["extra"] = {
                name: np.concatenate([part.extra[name] for part in parts]).tolist()
                for name in parts[0].extra
            }
        payload: bytes | memoryview = b""
        try:
            if block is not None and arena is not None:
                target = np.frombuffer(arena.memory, images.dtype, images.size, block[0])
                target[:] = images.ravel()
            else:
                payload = images.data.cast("B")
            engine.send(
                header,
                payload,
                timeout + 1.0,
                lambda outcome: self._answered(outcome, group, parts, block),
            )
        except BaseException:
            if block is not None and arena is not None:
                arena.free(block)
            raise

    def _answered(
        self,
        outcome: Reply | BaseException,
        group: _Group,
        parts: list[_Part],
        block: tuple[int, int] | None,
    ) -> None:
        """Give each request its rows of the reply, or the reply's error."""
        group.settle()
        arena = self._engine.arena
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            header, data = outcome
            if "error" in header:
                raise_error(header)
            outputs = unpack_arrays(header["outputs"], arena.memory if arena else None, data)
            queue, compute, batch = header["stats"]
            stats = BatchStats(queue, compute, int(batch))
            start = 0
            for part in parts:  # copies: the block is freed below
                rows = slice(start, start + len(part.images))
                start = rows.stop
                if not part.future.done():
                    answer = {k: v[rows].copy() for k, v in outputs.items()}
                    part.future.set_result((answer, stats, header))
        except BaseException as error:  # every request of the group learns of it
            _fail(parts, error)
        finally:
            # Freed once answered or timed out: the executor writes into a block only before
            # its reply, and never after the deadline it was given.
            if block is not None and arena is not None:
                arena.free(block)


def _fail(parts: list[_Part], error: BaseException) -> None:
    for part in parts:
        if not part.future.done():
            part.future.set_exception(error)
