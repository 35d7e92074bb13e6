"""TurnWriter: what one turn of the event loop writes leaves together, in order, and close()
sends what is pending first. Real sockets (a connected pair) under asyncio's loop and uvloop."""

from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from service.web.protocol import TurnWriter

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def run(loop_name: str, scenario) -> None:
    loop = LOOPS[loop_name]()
    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


async def _connected() -> tuple[TurnWriter, asyncio.Transport, socket.socket]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    return TurnWriter(transport, loop), transport, peer


async def _turn() -> None:
    """Let the loop run what is due: the writer's flush is scheduled for the next turn."""
    for _ in range(3):
        await asyncio.sleep(0)


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(1 << 20)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_one_turns_writes_leave_together_in_order(loop_name) -> None:
    async def scenario() -> None:
        writer, transport, peer = await _connected()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        writer.write(b"body")
        assert _received(peer) == b""  # nothing sent within the turn
        await _turn()
        assert _received(peer) == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"
        writer.write(b"second")
        await _turn()
        assert _received(peer) == b"second"
        transport.close()
        peer.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_close_sends_what_is_pending_first(loop_name) -> None:
    async def scenario() -> None:
        writer, transport, peer = await _connected()
        writer.write(b"the answer")
        writer.close()
        assert writer.is_closing()
        await _turn()
        assert _received(peer) == b"the answer"
        writer.write(b"late")  # after close: dropped, as the transport itself would
        await _turn()
        assert _received(peer) == b""  # end of stream
        peer.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_large_body_is_sent_whole(loop_name) -> None:
    async def scenario() -> None:
        writer, transport, peer = await _connected()
        body = bytes(range(256)) * 40_000  # 10 MB: more than any socket buffer
        writer.write(b"head;")
        writer.write(body)
        writer.close()
        received = b""
        while True:
            await asyncio.sleep(0.001)  # the interval between two reads of the peer socket
            try:
                chunk = peer.recv(1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                break
            received += chunk
        assert received == b"head;" + body
        peer.close()

    run(loop_name, scenario)
