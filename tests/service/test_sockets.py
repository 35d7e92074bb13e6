"""send_now: bytes leave at once when the socket takes them, keep their order when it does not,
and a closed peer is reported by the transport as usual. Real socket pairs under asyncio's
loop and uvloop."""

from __future__ import annotations

import asyncio
import os

import pytest

from service.sockets import MAX_CHUNKS, send_now, socket_fd
from tests.socketpairs import LOOPS, connected, read_all, run


class _Recorder(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_chunks_leave_at_once_in_one_piece(loop_name) -> None:
    async def scenario() -> None:
        transport, _, peer = await connected(_Recorder)
        fd = socket_fd(transport)
        assert fd is not None
        send_now(transport, fd, [b"head;", b"body"])
        assert peer.recv(100) == b"head;body"  # no turn of the loop in between
        assert transport.get_write_buffer_size() == 0
        transport.close()
        peer.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_what_the_socket_does_not_take_is_queued_and_order_is_kept(loop_name) -> None:
    async def scenario() -> None:
        transport, _, peer = await connected(_Recorder)
        fd = socket_fd(transport)
        large = bytes(range(256)) * 40_000  # 10 MB: more than any socket buffer
        send_now(transport, fd, [b"first;", large])
        assert transport.get_write_buffer_size() > 0  # the rest waits in the transport
        send_now(transport, fd, [b";second"])  # must not overtake it
        chunks = [bytes([65 + i % 26]) for i in range(MAX_CHUNKS * 3)]
        send_now(transport, fd, chunks)
        expected = b"first;" + large + b";second" + b"".join(chunks)
        assert await read_all(peer, len(expected)) == expected
        transport.close()
        peer.close()

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_closed_peer_is_reported_by_the_transport(loop_name) -> None:
    async def scenario() -> None:
        transport, protocol, peer = await connected(_Recorder)
        fd = socket_fd(transport)
        peer.close()
        for _ in range(100):  # a write to a closed peer fails (EPIPE), not raises
            if transport.is_closing():
                break
            send_now(transport, fd, [b"x" * 65536])
            await asyncio.sleep(0.001)
        assert isinstance(await protocol.lost, OSError)

    run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_pipe_transport_gets_the_bytes_too(loop_name) -> None:
    async def scenario() -> None:
        reader, writer = os.pipe()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.connect_write_pipe(_Recorder, os.fdopen(writer, "wb"))
        fd = socket_fd(transport)
        send_now(transport, fd, [b"a", b"b"])
        await asyncio.sleep(0.01)
        assert os.read(reader, 10) == b"ab"
        transport.close()
        os.close(reader)

    run(loop_name, scenario)
