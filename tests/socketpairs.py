"""Connected socket pairs under asyncio's loop and uvloop, for tests of what a transport sends."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import uvloop

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(loop_name: str, scenario: Callable[[], Awaitable[None]]) -> None:
    """Run ``scenario`` on a fresh loop of that kind, for at most 30 s."""
    loop = LOOPS[loop_name]()
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 30))
    finally:
        loop.close()


async def connected(
    protocol: Callable[[], asyncio.Protocol] = asyncio.Protocol,
) -> tuple[asyncio.Transport, asyncio.Protocol, socket.socket]:
    """Our end as a transport of the running loop, and the peer as a non-blocking socket."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, made = await loop.connect_accepted_socket(protocol, ours)
    return transport, made, peer


def received(peer: socket.socket) -> bytes:
    """What the peer can read now (b"" when nothing is waiting)."""
    try:
        return peer.recv(1 << 20)
    except BlockingIOError:
        return b""


async def read_all(peer: socket.socket, count: int) -> bytes:
    """Read until ``count`` bytes or the end of the stream, letting the loop flush meanwhile."""
    data = bytearray()
    while len(data) < count:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            await asyncio.sleep(0.001)
            continue
        if not chunk:
            break
        data += chunk
    return bytes(data)
