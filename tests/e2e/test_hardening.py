"""Slow and oversized clients against `python -m service`, over raw sockets on 127.0.0.1.

Each test starts its own server (two front ends, `gap` only) with the limits it exercises set
short, so the attacks end within seconds; the limits' defaults are in the settings table.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import statistics
import time

import httpx
import pytest

from tests.conftest import start_server
from tests.images import digit_png

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@pytest.fixture(scope="module")
def hardened(gap_repository, tmp_path_factory):
    _raise_file_limit(4096)  # the server inherits it too
    instance = start_server(
        gap_repository,
        tmp_path_factory.mktemp("hardened") / "server.log",
        CONVBRIDGE_WORKERS="2",
        CONVBRIDGE_BODY_TIMEOUT_S="3",
        CONVBRIDGE_HEADER_TIMEOUT_S="2",
    )
    try:
        yield instance.wait_ready()
    finally:
        assert instance.stop() == 0


def _exchange(port: int, raw: bytes, wait: float = 5.0) -> bytes:
    """Send ``raw``, then read until the server closes (or ``wait`` passes)."""
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.settimeout(wait)
        try:
            connection.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us mid-send: a refusal too
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


@pytest.mark.parametrize(
    ("name", "raw", "statuses"),
    [
        (
            "a 1 MB header line",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
            (b"431",),
        ),
        (
            "10,000 headers",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(10_000))
            + b"\r\n",
            (b"431",),
        ),
        (
            "a 100 KB URL",
            b"GET /healthz?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            (b"414",),
        ),
    ],
)
def test_oversized_heads_are_refused_before_the_app(hardened, name, raw, statuses) -> None:
    answer = _exchange(hardened.port, raw)
    status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.1 ") else b"closed"
    assert status in (*statuses, b"closed"), (name, answer[:200])
    if answer:
        assert b"connection: close" in answer.lower()
        assert b'{"error":' in answer
    assert httpx.get(f"{hardened.url}/readyz", timeout=10).status_code == 200
    ordinary = _exchange(
        hardened.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert ordinary.startswith(b"HTTP/1.1 200")


def test_pipelined_requests_are_answered_in_order_on_one_connection(hardened, digits) -> None:
    """Three requests sent at once on one connection: three whole answers, in their order.

    A front end sends what one turn of its loop wrote in one call (TurnWriter); answers to
    requests that arrive together must still leave whole and in order, the last one before
    the connection closes."""
    png = digit_png(digits.test.images[0])
    classify = (
        b"POST /models/gap/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: %d\r\n\r\n" % len(png) + png
    )
    raw = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        + classify
        + b"GET /v1/models/gap HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answer = _exchange(hardened.port, raw, wait=30)
    heads = [part.split(b"\r\n", 1)[0] for part in answer.split(b"HTTP/1.1 ")[1:]]
    assert heads == [b"200 OK"] * 3, answer[:500]
    health, prediction, status = answer.split(b"HTTP/1.1 ")[1:]
    assert b'"status"' in health
    assert b'"predictions"' in prediction and b"x-model-version: 1" in prediction.lower()
    assert b'"model_version_status"' in status and b"connection: close" in status.lower()


def test_a_slow_head_is_cut_off(hardened) -> None:
    """Slowloris: a head that never ends gets 408 from the server (our own wait is longer)."""
    answer = _exchange(hardened.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", wait=15)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"took over 2 s to arrive" in answer


async def _slow_body(port: int, answers: list[bytes], opened: asyncio.Queue[None]) -> None:
    """Announce 100,000 bytes, send 10, then hold the connection: a slow upload."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /models/gap/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Content-Length: 100000\r\n\r\n" + b"\x89PNG\r\n\x1a\n\x00\x00"
    )
    await writer.drain()
    opened.put_nowait(None)
    try:
        answers.append(await asyncio.wait_for(reader.read(200), 30))
    except (TimeoutError, ConnectionError):
        answers.append(b"no answer")
    finally:
        writer.close()


async def _normal_requests(url: str, png: bytes, count: int) -> tuple[list[int], list[float]]:
    statuses, latencies = [], []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for _ in range(count):
            started = time.perf_counter()
            answer = await client.post(
                "/models/gap/classify", content=png, headers={"Content-Type": "image/png"}
            )
            latencies.append(time.perf_counter() - started)
            statuses.append(answer.status_code)
            await asyncio.sleep(0.01)  # a client's pace between requests, not a synchronisation
    return statuses, latencies


def test_a_thousand_slow_uploads_do_not_starve_normal_requests(hardened, digits) -> None:
    png = digit_png(digits.test.images[0])

    async def attack() -> tuple[list[bytes], list[int], list[float], list[float]]:
        _, before = await _normal_requests(hardened.url, png, 20)
        answers: list[bytes] = []
        opened: asyncio.Queue[None] = asyncio.Queue()
        slow = [
            asyncio.create_task(_slow_body(hardened.port, answers, opened)) for _ in range(1000)
        ]
        for _ in range(1000):  # every slow upload has connected and sent its head
            await asyncio.wait_for(opened.get(), 30)
        statuses, during = await _normal_requests(hardened.url, png, 40)
        await asyncio.gather(*slow)
        return answers, statuses, before, during

    answers, statuses, before, during = asyncio.run(attack())
    # Normal requests went on being answered while the uploads stalled (before the fix every
    # one got 503: the uploads held every admission place).
    assert statuses == [200] * 40
    print(
        f"classify p50 before {statistics.median(before) * 1000:.1f} ms, during "
        f"{statistics.median(during) * 1000:.1f} ms (1,000 slow uploads open)"
    )
    # The slow uploads were cut off: 408, or the connection closed.
    assert len(answers) == 1000
    refused = [a for a in answers if a.startswith(b"HTTP/1.1 408") or a == b""]
    assert len(refused) == 1000, {a[:40] for a in answers} - {b""}
    assert httpx.get(f"{hardened.url}/readyz", timeout=10).status_code == 200


def test_the_connection_cap_answers_503_in_json(gap_repository, tmp_path) -> None:
    instance = start_server(
        gap_repository,
        tmp_path / "server.log",
        CONVBRIDGE_WORKERS="1",
        CONVBRIDGE_MAX_CONNECTIONS="8",
    )
    held: list[socket.socket] = []
    try:
        instance.wait_ready()
        for _ in range(8):
            held.append(socket.create_connection(("127.0.0.1", instance.port)))
        # The kernel completes a connection before the front end accepts it: ask until the
        # front end has taken all eight (each ask before that is answered and closed).
        probe = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        deadline = time.monotonic() + 30
        answer = _exchange(instance.port, probe)
        while not answer.startswith(b"HTTP/1.1 503") and time.monotonic() < deadline:
            assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
            answer = _exchange(instance.port, probe)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert b"retry-after: 1" in answer.lower() and b"connections open" in answer
        for connection in held:
            connection.close()
        # Closed connections give their places back as the front end sees them close.
        deadline = time.monotonic() + 30
        answer = _exchange(instance.port, probe)
        while not answer.startswith(b"HTTP/1.1 200") and time.monotonic() < deadline:
            answer = _exchange(instance.port, probe)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    finally:
        for connection in held:
            connection.close()
        assert instance.stop() == 0
