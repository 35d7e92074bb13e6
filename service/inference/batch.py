"""A batcher's bookkeeping: queued items, tickets, what a request went through, joined rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from service.inference.errors import BatchSizeMismatchError

if TYPE_CHECKING:
    from service.inference.batching import Batcher

Outputs = Mapping[str, np.ndarray]
# Inputs a signature takes beside the images, one row per image (explain's class_index).
Extra = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class BatchStats:
    """What one request went through: time queued, time computing, size of its batch."""

    queue_seconds: float
    compute_seconds: float
    batch_size: int


@dataclass
class Item:
    images: np.ndarray
    deadline: float
    future: asyncio.Future[tuple[Outputs, BatchStats]]
    extra: Extra = field(default_factory=dict)
    enqueued: float = field(default_factory=time.monotonic)


class Ticket:
    """One request's place in a batcher, from admission to answer.

    It holds one announced image while the request's body is read; :meth:`expect` turns that
    into the images the request carries (the batcher waits for them), :meth:`submit` queues
    them, and :meth:`release` (also on leaving a ``with`` block) gives back whatever it still
    holds. Callers count nothing themselves.
    """

    def __init__(self, batcher: Batcher) -> None:  # made by Batcher.reserve
        self._batcher = batcher
        self._held = 1

    def expect(self, count: int) -> None:
        """The request carries ``count`` images, being decoded now (again: nothing changes)."""
        held, self._held = self._held, count
        if count != held:
            self._batcher._announce(count - held)

    async def submit(
        self, images: np.ndarray, timeout: float, extra: Extra | None = None, alone: bool = False
    ) -> tuple[dict[str, np.ndarray], BatchStats]:
        """Queue the images; see :meth:`Batcher.submit`. The ticket holds nothing afterwards."""
        held, self._held = self._held, 0
        return await self._batcher._submit(images, timeout, extra or {}, held, alone)

    def release(self) -> None:
        """Give back what the ticket still holds (nothing once submitted); idempotent."""
        if self._held:
            held, self._held = self._held, 0
            self._batcher._announce(-held)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def check_rows(outputs: Outputs, expected: int) -> None:
    for name, value in outputs.items():
        if len(value) != expected:
            raise BatchSizeMismatchError(
                f"output {name!r} has {len(value)} rows for {expected} images"
            )


def join(parts: list[tuple[Outputs, BatchStats]]) -> tuple[dict[str, np.ndarray], BatchStats]:
    """Put the chunks of one request back together; stats describe its slowest chunk."""
    if len(parts) == 1:
        outputs, stats = parts[0]
        return dict(outputs), stats
    joined = {name: np.concatenate([p[0][name] for p in parts]) for name in parts[0][0]}
    stats = BatchStats(
        queue_seconds=max(p[1].queue_seconds for p in parts),
        compute_seconds=sum(p[1].compute_seconds for p in parts),
        batch_size=max(p[1].batch_size for p in parts),
    )
    return joined, stats
