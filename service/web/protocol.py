"""uvicorn's httptools protocol with limits on the request head, checked as bytes arrive.

httptools (llhttp) buffers a header of any size and any number of headers: one request with a
2 MB header line, or 20,000 headers, reached the app. This protocol counts the request line
and headers while they are parsed and answers 414 or 431 (then closes the connection) the
moment a limit is passed, before the request reaches the app and before the rest of the head
is buffered. A head that takes longer than ``header_timeout_s`` to arrive (slowloris) gets 408
and a closed connection.

Why a guard rather than another server: uvicorn's h11 protocol bounds only the head's total
size (``h11_max_incomplete_event_size``), not lines or counts; a reverse proxy in front would
add a hop and a process per container. The guard cost about 4 us per request on a bare ASGI
app (44,000 -> 37,000 req/s, wrk -t1 -c32), about 1% of a front end's work per request.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.settings import Settings
from service.sockets import send_now, socket_fd

_REASONS = {
    408: b"Request Timeout",
    414: b"URI Too Long",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


@dataclass(frozen=True)
class HeadLimits:
    url_bytes: int
    line_bytes: int  # one header, name and value
    total_bytes: int  # the request line and every header
    count: int
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> HeadLimits:
        return cls(
            settings.max_url_bytes,
            settings.max_header_line_bytes,
            settings.max_header_bytes,
            settings.max_header_count,
            settings.header_timeout_s,
        )


class TurnWriter:
    """A connection's transport that sends what one turn of the event loop wrote in one call.

    uvicorn writes a response's head and its body separately, which costs two system calls
    and two TCP segments an answer. Everything the protocol and its request cycles write goes
    through this object instead; the bytes of one turn leave together, in order, in one
    ``writev`` (:func:`~service.sockets.send_now`): at the start of the next turn, or as soon
    as a lone request's answer is complete (the protocol's ``on_response_complete``).
    ``close`` sends what is pending first, so no answer is dropped. One front end on ``gap``,
    c=64: 0.27 -> 0.25 ms of CPU a request, +7% requests/s.
    """

    __slots__ = ("_fd", "_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._fd = socket_fd(transport)

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or self._transport.is_closing():
            return
        send_now(self._transport, self._fd, pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _RefusedError(Exception):
    """Raised from a parser callback to stop parsing; the protocol answers instead."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with head limits; :func:`protocol_class` sets ``limits``."""

    limits: HeadLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._header_count = 0
        self._in_head = True
        self._refusal: tuple[int, str] | None = None
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        writer = TurnWriter(transport, self.loop)
        super().connection_made(writer)  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._arm_head_timer()  # a keep-alive connection's next request starts its clock
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after this chunk: the bytes buffered so far are all head.
        if self._in_head and self._head_bytes > self.limits.total_bytes + self.limits.url_bytes:
            self._answer(431, "the request head is too large")

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._header_count = True, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.url_bytes:
            self._refuse(414, f"the URL is longer than {self.limits.url_bytes:,} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if len(name) + len(value) > self.limits.line_bytes:
            self._refuse(431, f"a header line is longer than {self.limits.line_bytes:,} bytes")
        if self._header_count > self.limits.count:
            self._refuse(431, f"the request has more than {self.limits.count} headers")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        head = len(self.url) + sum(len(k) + len(v) + 4 for k, v in self.headers)
        if head > self.limits.total_bytes:
            self._refuse(431, f"the request head is larger than {self.limits.total_bytes:,} bytes")
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            # uvicorn would answer a plain-text 503; every error here is JSON.
            self._refuse(503, f"this front end has {limit:,} connections open; retry shortly")
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        if len(self.tasks) == 1:
            # The only request under way in this process: its answer leaves now, not after
            # what its task does after the last send (the middleware's bookkeeping, the task's
            # end) and a turn of the loop. With others under way the answers of a turn still
            # leave together: each write wakes the client, which then takes a core from the
            # rest of the turn (immediate writes under load: gap c=64 -4.6%).
            cast(TurnWriter, self.transport).flush()  # as connection_made set it
        self._in_head, self._head_bytes = True, 0
        super().on_response_complete()

    # Refusals
    def _refuse(self, status: int, message: str) -> None:
        self._refusal = (status, message)
        raise _RefusedError(message)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error: ours when a limit stopped the parser."""
        if self._refusal is None:
            super().send_400_response(msg)
            return
        self._answer(*self._refusal)

    def _answer(self, status: int, message: str) -> None:
        """A JSON error with ``Connection: close``, then the connection closes."""
        self._disarm_head_timer()
        if self.transport.is_closing():
            return
        advice = {408: "send it faster", 414: "send a shorter one", 503: ""}.get(
            status, "send a smaller request"
        )
        body = ('{"error":"' + message + (f"; {advice}" if advice else "") + '"}').encode()
        extra = b"retry-after: 1\r\n" if status == 503 else b""
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n%s\r\n" % (status, _REASONS[status], len(body), extra) + body
        )
        self.transport.close()

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.timeout_s, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head:
            self._answer(408, f"the request head took over {self.limits.timeout_s:g} s to arrive")


def protocol_class(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http=``, with these settings' limits."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"limits": HeadLimits.from_settings(settings)},
    )


def raise_file_limit(connections: int) -> None:
    """Let the process hold ``connections`` sockets and its own files (soft limit up to hard)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn.Config keywords for a front end: head and connection limits, no uvicorn access
    log."""
    raise_file_limit(settings.max_connections)
    return {
        "http": protocol_class(settings),
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        # uvicorn's access log wrote a plain-text line per request at the default level (info),
        # JSON format or not: -13% requests/s on `gap` at c=64. convbridge's own
        # (CONVBRIDGE_ACCESS_LOG, web/middleware.py) is off unless asked for.
        "access_log": False,
    }
