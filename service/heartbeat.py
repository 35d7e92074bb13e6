"""A child's proof of life: its event loop writes the time into a file every second, and the
supervisor kills a child whose loop has stopped turning (hung: a deadlock, a stuck call, a
SIGSTOP) so that it is started again, as if it had died.

Without it a hung executor left every request to wait for its deadline while /readyz stayed
green, and a hung front end kept its share of the port's new connections waiting for ever.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from pathlib import Path

INTERVAL_S = 1.0
_STAMP = struct.Struct("d")


class Heartbeat:
    """Writes ``time.monotonic()`` (one clock for every process) into ``path`` each second."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)

    def start(self) -> None:
        """Beat now and every INTERVAL_S on the running loop."""
        self._beat()

    def _beat(self) -> None:
        os.pwrite(self._fd, _STAMP.pack(time.monotonic()), 0)
        asyncio.get_running_loop().call_later(INTERVAL_S, self._beat)


def reset(path: Path) -> None:
    """No beat yet: a child just started is not judged before its loop runs."""
    path.write_bytes(b"")


def silence(path: Path) -> float | None:
    """Seconds since the last beat in ``path``, or None before the first one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _STAMP.size:
        return None
    (stamp,) = _STAMP.unpack_from(data)
    return time.monotonic() - float(stamp)
