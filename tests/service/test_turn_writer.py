"""TurnWriter: what one turn of the event loop writes leaves together, in order, and close()
sends what is pending first. Real sockets (a connected pair) under asyncio's loop and uvloop."""

from __future__ import annotations

import asyncio

import pytest

from service.web.protocol import TurnWriter
from tests.socketpairs import LOOPS, connected, read_all, received, run


async def _connected():
    transport, _, peer = await connected()
    return TurnWriter(transport, asyncio.get_running_loop()), transport, peer


async def _turn() -> None:
    """Let the loop run what is due: the writer's flush is scheduled for the next turn."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_one_turns_writes_leave_together_in_order(loop_name) -> None:
    async def scenario() -> None:
        writer, transport, peer = await _connected()
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
        writer.write(b"body")
        assert received(peer) == b""  # nothing sent within the turn
        await _turn()
        assert received(peer) == b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"
        writer.write(b"second")
        await _turn()
        assert received(peer) == b"second"
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
        assert received(peer) == b"the answer"
        writer.write(b"late")  # after close: dropped, as the transport itself would
        await _turn()
        assert received(peer) == b""  # end of stream
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
        assert await read_all(peer, 1 << 40) == b"head;" + body  # until the end of the stream
        peer.close()

    run(loop_name, scenario)
