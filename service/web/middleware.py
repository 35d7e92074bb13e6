"""Pure ASGI middleware: request metrics by route template (and the access log, when it is
on), the bearer token, and the request body's limits in size and time."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
import urllib.parse

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, BodyTooLargeError
from service.metrics import Metrics

ACCESS = logging.getLogger("convbridge.access")


class MetricsMiddleware:
    """Observe every HTTP request in convbridge_http_request_duration_seconds, and with
    ``access_log`` write a line for it on the convbridge.access logger."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        observed = False

        def observe() -> None:
            nonlocal observed
            observed = True
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            seconds = time.perf_counter() - started
            self.metrics.observe_http(scope["method"], template, status, seconds)
            if self.access_log:
                _log_access(scope, status, seconds)

        async def send_with_status(message: Message) -> None:
            nonlocal status
            kind = message["type"]
            if kind == "http.response.start":
                status = message["status"]
            elif kind == "http.response.body" and not message.get("more_body") and not observed:
                # Observed before the answer's last bytes: they leave as this send ends
                # (the protocol flushes a complete answer), and a client that reads /metrics
                # next must find this request counted.
                observe()
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            if not observed:
                observe()


def _log_access(scope: Scope, status: int, seconds: float) -> None:
    """``client "METHOD /path?query HTTP/1.1" status milliseconds``, as an access log reads."""
    client = scope.get("client")
    query = scope.get("query_string", b"")
    path = urllib.parse.quote(scope["path"]) + ("?" + query.decode("latin-1") if query else "")
    ACCESS.info(
        '%s "%s %s HTTP/%s" %d %.2f ms',
        f"{client[0]}:{client[1]}" if client else "-",
        scope["method"],
        path,
        scope.get("http_version", "1.1"),
        status,
        seconds * 1000,
    )


class BearerTokenMiddleware:
    """401 unless ``Authorization: Bearer <token>``, except for health checks, metrics and the
    explorer page's static files (the page asks for the token and sends it with API calls)."""

    OPEN = frozenset(
        {"/", "/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"}
    )

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or path in self.OPEN
            or path.startswith(("/static/", "/docs-assets/"))
            or scope["method"] == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        error = ApiError(
            401,
            "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await _reject(send, error)


class BodyLimitMiddleware:
    """413 before reading a body whose Content-Length is over the limit; stop reading past it.

    Time limits too: the body must arrive within ``timeout_s``, and after a grace of
    ``GRACE_S`` at ``min_rate`` bytes a second or faster; otherwise 408 with
    ``Connection: close``, and whatever the request held is given back at once. Only reads of
    the body are timed: a wait for the client's disconnect afterwards is not.
    """

    GRACE_S = 2.0

    def __init__(
        self, app: ASGIApp, max_bytes: int, timeout_s: float = 30.0, min_rate: int = 0
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _reject(send, BodyTooLargeError(self.max_bytes))
            return
        received = 0
        started: float | None = None
        complete = False
        arrived = _arrived(receive)

        async def limited_receive() -> Message:
            nonlocal received, started, complete
            if complete:
                return await receive()
            # The monotonic clock, not the loop's: Python 3.11's asyncio.get_running_loop()
            # calls getpid() (a system call) each time, 1% of a classify request's front end.
            now = time.monotonic()
            if started is None:
                started = now
            if arrived is not None and arrived.is_set():
                message = await receive()  # already here: nothing to time
            else:
                try:  # asyncio.timeout, not wait_for: no task per read on the hot path
                    async with asyncio.timeout(self._allowed(started, received, now)):
                        message = await receive()
                except TimeoutError:
                    raise self._too_slow(received, time.monotonic() - started) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    def _allowed(self, started: float, received: int, now: float) -> float:
        """Seconds the next part of the body may take: until the body deadline, or until the
        bytes so far (and one more) fall below the minimum rate."""
        until = started + self.timeout_s
        if self.min_rate:
            until = min(until, started + self.GRACE_S + (received + 1) / self.min_rate)
        return max(0.0, until - now)

    def _too_slow(self, received: int, elapsed: float) -> ApiError:
        return ApiError(
            408,
            f"the request body did not arrive in time ({received:,} bytes in {elapsed:.1f} s; "
            f"the limits are {self.timeout_s:g} s in all and {self.min_rate:,} bytes/s after "
            f"{self.GRACE_S:g} s): send it faster, or raise CONVBRIDGE_BODY_TIMEOUT_S",
            headers={"Connection": "close"},
            received_bytes=received,
        )


def _arrived(receive: Receive) -> asyncio.Event | None:
    """The event uvicorn's request cycle sets when body bytes (or the disconnect) are there to
    take, so that a read which cannot wait skips its timer (asyncio.timeout costs about 4 us,
    1-2% of a small request's work in a front end); None for any other server's receive."""
    event = getattr(getattr(receive, "__self__", None), "message_event", None)
    return event if isinstance(event, asyncio.Event) else None


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reject(send: Send, error: ApiError) -> None:
    body = orjson.dumps(error.body())
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    headers += [(key.lower().encode(), value.encode()) for key, value in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
