"""TurnWriter: what one turn of the event loop writes leaves together, in order, and close()
sends what is pending first. Real sockets (a connected pair) under asyncio's loop and uvloop;
and under a real uvicorn server, a complete answer leaves at once, already counted."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.settings import Settings
from service.web.middleware import MetricsMiddleware
from service.web.protocol import TurnWriter, protocol_class
from tests.socketpairs import LOOPS, connected, read_all, received, run
from tests.threaded_uvicorn import uvicorn_in_thread


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


class _HoldsOnAfterAnswering:
    """An ASGI app that answers, then blocks its event loop until the client says it has the
    whole answer (or 10 s pass): the answer must leave as it completes, not at a later turn
    of the loop. ``counted`` is the HTTP metric's count the client saw on arrival."""

    def __init__(self) -> None:
        self.client_has_it = threading.Event()
        self.waited: list[bool] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        await receive()
        length = [(b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": b"ok"})
        self.waited.append(self.client_has_it.wait(10))  # the loop stops here meanwhile


def test_a_complete_answer_leaves_at_once_counted_in_the_metrics() -> None:
    """Over a real uvicorn server on 127.0.0.1 with the front ends' protocol and middleware:
    the answer reaches the client while the app still runs (blocking its loop), and the
    request is already counted in ``convbridge_http_request_duration_seconds``."""
    registry = CollectorRegistry()
    app = _HoldsOnAfterAnswering()
    served = MetricsMiddleware(app, Metrics(registry, process=False))
    with uvicorn_in_thread(served, http=protocol_class(Settings())) as port:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                answer = b""
                while not answer.endswith(b"\r\n\r\nok"):
                    chunk = sock.recv(4096)  # times out (5 s) if the answer waits for the app
                    assert chunk, f"connection closed after {answer!r}"
                    answer += chunk
                labels = {"method": "POST", "route": "unmatched", "status": "200"}
                counted = registry.get_sample_value(
                    "convbridge_http_request_duration_seconds_count", labels
                )
                app.client_has_it.set()
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert counted == 1
            deadline = time.monotonic() + 10
            while not app.waited:  # the app goes on once the client has its answer
                assert time.monotonic() < deadline, "the app never went on"
                time.sleep(0.01)  # the interval between two looks at the app's state
            assert app.waited == [True]
        finally:
            app.client_has_it.set()  # never leave the server's loop blocked
