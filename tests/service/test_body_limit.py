"""BodyLimitMiddleware's untimed reads, under a real uvicorn server on 127.0.0.1: the middleware
skips the timer of a read whose body has already arrived, which it learns from uvicorn's
request cycle (``_arrived``). This checks that uvicorn still tells it, and tells it right: set
for a body sent with its head, not set for one that comes later (that read waits, timed; the
slow-upload tests in tests/e2e/test_hardening.py cut such bodies off with 408)."""

from __future__ import annotations

import socket
import time

from service.web.middleware import _arrived
from tests.threaded_uvicorn import uvicorn_in_thread


class Recorder:
    """An ASGI app that reads the whole body and answers its length; before each read it
    notes what ``_arrived`` makes of uvicorn's receive."""

    def __init__(self) -> None:
        self.seen: list[bool | None] = []  # per read: event set, not set, or no event

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            event = _arrived(receive)
            self.seen.append(None if event is None else event.is_set())
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        answer = str(len(body)).encode()
        length = [(b"content-length", str(len(answer)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length})
        await send({"type": "http.response.body", "body": answer})


def test_uvicorn_tells_whether_a_body_is_already_there() -> None:
    recorder = Recorder()
    with uvicorn_in_thread(recorder, http="httptools") as port:
        head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
        # A body sent with its head, in one write: already there at the first read.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head + b"hello")
            assert sock.recv(4096).endswith(b"\r\n\r\n5")
        assert recorder.seen == [True]
        recorder.seen.clear()

        # A body that comes later than its head: the read waits, timed.
        deadline = time.monotonic() + 30
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head)
            while not recorder.seen:  # until the app is reading
                assert time.monotonic() < deadline, "the app never read"
                time.sleep(0.01)  # the interval between two looks at the app's state
            sock.sendall(b"hello")
            assert sock.recv(4096).endswith(b"\r\n\r\n5")
        assert recorder.seen == [False]
