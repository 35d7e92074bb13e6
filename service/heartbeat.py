"""A child's proof of life: its event loop writes the time into a file every second, and the
supervisor kills a child whose loop has stopped turning (hung: a deadlock, a stuck call, a
SIGSTOP) so that it is started again, as if it had died.

Without it a hung executor left every request to wait for its deadline while /readyz stayed
green, and a hung front end kept its share of the port's new connections waiting for ever.
The front ends read the executor's beats too (:class:`Watch`): after :data:`STALE_S` without
one they say they are not ready and refuse new requests with 503 at once, long before the
supervisor's CONVBRIDGE_HANG_TIMEOUT_S ends the executor.

A model call that never returns (a wedged device, a stuck kernel) leaves the executor's loop
turning. So each of its beats also says when the oldest model call under way started
(:func:`pulse`), and the supervisor ends an executor whose call has run for longer than the
same timeout: every request in that call has long passed its deadline by then.
"""

from __future__ import annotations

import asyncio
import math
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

INTERVAL_S = 1.0
# Three beats missed: the executor's loop has stopped turning (its own work never holds it for
# more than milliseconds; a model call alone on it is at most Batcher.INLINE_LIMIT).
STALE_S = 3 * INTERVAL_S
# (the beat's time, the start of the oldest model call under way or NaN), time.monotonic():
# one clock for every process.
_STAMP = struct.Struct("dd")


class Heartbeat:
    """Writes the time into ``path`` each second, and ``busy_since()``: when the oldest model
    call under way started (None: no call, or a process without models)."""

    def __init__(self, path: Path, busy_since: Callable[[], float | None] = lambda: None) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        self._busy_since = busy_since

    def start(self) -> None:
        """Beat now and every INTERVAL_S on the running loop."""
        self._beat()

    def _beat(self) -> None:
        since = self._busy_since()
        os.pwrite(self._fd, _STAMP.pack(time.monotonic(), math.nan if since is None else since), 0)
        asyncio.get_running_loop().call_later(INTERVAL_S, self._beat)


def reset(path: Path) -> None:
    """No beat yet: a child just started is not judged before its loop runs."""
    path.write_bytes(b"")


def _read(path: Path) -> tuple[float, float] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _STAMP.size:
        return None
    beat, since = _STAMP.unpack_from(data)
    return float(beat), float(since)


def pulse(path: Path) -> tuple[float | None, float | None]:
    """(seconds since the last beat in ``path``, seconds the oldest model call under way at
    that beat had run then), from one read; each None when unknown: no beat yet, no call.

    The call's age is as of the beat, not now: a call that ended since is not judged on time
    it did not take.
    """
    stamp = _read(path)
    if stamp is None:
        return None, None
    beat, since = stamp
    return time.monotonic() - beat, None if math.isnan(since) else beat - since


def silence(path: Path) -> float | None:
    """Seconds since the last beat in ``path``, or None before the first one."""
    return pulse(path)[0]


class Watch:
    """Another process's beats in ``path``, read every half beat on the running loop.

    :attr:`stale` is how long it has been silent once that is over :data:`STALE_S`, else None
    (also before its first beat: a process just started is not judged).
    """

    def __init__(self, path: Path, on_change: Callable[[float | None], None]) -> None:
        self.path = path
        self.stale: float | None = None
        self._on_change = on_change  # called with the new value of ``stale`` when it flips

    async def run(self) -> None:
        while True:
            quiet = silence(self.path)
            stale = quiet if quiet is not None and quiet > STALE_S else None
            if (stale is None) != (self.stale is None):
                self._on_change(stale)
            self.stale = stale
            await asyncio.sleep(INTERVAL_S / 2)
