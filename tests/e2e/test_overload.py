"""Deadlines and overload over a real socket: 504s that skip the model, and a bounded load test
at about four times the measured capacity that the server survives."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import socket
import time

import httpx
import numpy as np
import pytest

from benchmarks.overload import (
    IMAGES_PER_REQUEST,
    MAX_REQUESTS,
    OVERLOAD_SECONDS,
    Body,
    Load,
    run_overload,
)
from tests.conftest import start_server
from tests.images import digit_png, png_files
from tests.metrics import samples, value
from tests.models import export_slow

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TIMEOUT = "X-Request-Timeout-Ms"
ROUTE = "/models/gap/classify?top_k=1"


def test_a_shorter_deadline_header_answers_504_on_every_api_without_running_the_model(
    client, digits
) -> None:
    image = digits.test.images[0]
    png = digit_png(image)
    short = {TIMEOUT: "0.001"}
    before = samples(client.get("/metrics").text)
    answers = {
        "classify": client.post(
            "/models/residual_gap/classify",
            content=png,
            headers={"Content-Type": "image/png", **short},
        ),
        "feature_maps": client.post(
            "/models/residual_gap/feature-maps", files=png_files([png]), headers=short
        ),
        "tfserving": client.post(
            "/v1/models/residual_gap:predict",
            json={"instances": [image.tolist()]},
            headers=short,
        ),
        "kserve": client.post(
            "/v2/models/residual_gap/infer",
            json={
                "inputs": [
                    {
                        "name": "images",
                        "shape": [1, 28, 28, 1],
                        "datatype": "UINT8",
                        "data": image.ravel().tolist(),
                    }
                ]
            },
            headers=short,
        ),
    }
    after = samples(client.get("/metrics").text)
    for api, answer in answers.items():
        assert answer.status_code == 504, (api, answer.text)
        assert "0.001 ms from X-Request-Timeout-Ms" in answer.json()["error"], api
    # Nothing was computed for requests nobody waits for any more.
    batches = "convbridge_batch_size_count"
    assert value(after, batches, model="residual_gap", version="1") == value(
        before, batches, model="residual_gap", version="1"
    )
    requests = "convbridge_requests_total"
    for endpoint in ("classify", "feature_maps"):
        labels = {"model": "residual_gap", "endpoint": endpoint, "outcome": "timeout"}
        labels["protocol"] = "rest"
        assert value(after, requests, **labels) - value(before, requests, **labels) == 1
    # A generous budget changes nothing.
    fine = client.post(
        "/models/residual_gap/classify",
        content=png,
        headers={"Content-Type": "image/png", TIMEOUT: "20000"},
    )
    assert fine.status_code == 200, fine.text


# --- admission before the body ---------------------------------------------------------------


def _answer(sock: socket.socket) -> tuple[str, bytes]:
    """One answer: its status line and headers, and its body (Content-Length bytes, if any)."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the connection after {received!r}"
        received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    text = head.decode("latin-1")
    length = next(
        (
            int(line.split(":", 1)[1])
            for line in text.split("\r\n")
            if line.lower().startswith("content-length:")
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection in the middle of a body"
        body += chunk
    return text, body


def _ask_to_send(sock: socket.socket, port: int, length: int) -> tuple[str, bytes]:
    """Send only the request's head, with ``Expect: 100-continue``; the server's first answer."""
    sock.sendall(
        f"POST /models/gap/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: image/png\r\nContent-Length: {length}\r\n"
        "Expect: 100-continue\r\n\r\n".encode()
    )
    return _answer(sock)


def test_a_full_queue_refuses_before_the_body_is_sent(demo_repository, digits, tmp_path) -> None:
    """Admission comes first. A model that sleeps 3 s a call holds one image in flight and one
    queued, the front end's limit (MAX_QUEUE_IMAGES=2); a client that then sends its headers with
    `Expect: 100-continue` gets its 503 at once, without ever sending the body (the server would
    have asked for it with `100 Continue` had it read the body). Once the queue drains, the same
    request is asked for its body and answered."""
    repository = tmp_path / "models"
    export_slow(demo_repository / "gap" / "1", repository / "gap" / "1", "gap", seconds=3.0)
    server = start_server(
        repository,
        tmp_path / "server.log",
        CONVBRIDGE_WORKERS="1",
        CONVBRIDGE_MAX_BATCH_SIZE="1",
        CONVBRIDGE_MAX_QUEUE_IMAGES="2",
        CONVBRIDGE_MAX_DELAY_MS="0",
        CONVBRIDGE_BATCH_THREADS="1",  # one image inside the model, not one per core
    )
    png = digit_png(digits.test.images[0])
    try:
        server.wait_ready()

        def classify() -> httpx.Response:
            return httpx.post(
                f"{server.url}/models/gap/classify",
                content=png,
                headers={"Content-Type": "image/png"},
                timeout=60,
            )

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            held = [pool.submit(classify) for _ in range(2)]
            # One image inside the model, the other waiting: the executor's own gauge says so.
            deadline = time.monotonic() + 30
            while (
                value(
                    samples(httpx.get(f"{server.url}/metrics").text),
                    "convbridge_queue_depth",
                    model="gap",
                    version="1",
                )
                < 1
            ):
                assert time.monotonic() < deadline, "the second image never queued"
                time.sleep(0.01)  # the interval between two reads of the gauge
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                refused, body = _ask_to_send(sock, server.port, len(png))
            answers = [future.result() for future in held]
        assert [answer.status_code for answer in answers] == [200, 200]
        status_line, *header_lines = refused.split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines)
        assert status_line == "HTTP/1.1 503 Service Unavailable", refused
        assert {key.lower() for key in headers} >= {"retry-after", "content-type"}
        assert "overloaded" in json.loads(body)["error"], body
        # The queue is empty again: the same request is asked for its body, then answered.
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            assert _ask_to_send(sock, server.port, len(png)) == ("HTTP/1.1 100 Continue", b"")
            sock.sendall(png)
            head, body = _answer(sock)
            assert head.startswith("HTTP/1.1 200 OK") and json.loads(body)["version"] == 1
    finally:
        assert server.stop() == 0


# --- the load test ---------------------------------------------------------------------------


def test_four_times_capacity_is_survived(demo_repository, digits, tmp_path) -> None:
    """What must hold on any machine under overload; the ratios that depend on its speed
    (served against capacity, latency after against before) are in `make bench`."""
    repository = tmp_path / "models"
    shutil.copytree(demo_repository / "gap", repository / "gap")
    server = start_server(repository, tmp_path / "server.log", CONVBRIDGE_REQUEST_TIMEOUT_S="5")
    try:
        server.wait_ready()
        images = digits.test.images[:IMAGES_PER_REQUEST]
        pngs = [digit_png(image) for image in images]
        body = Body.of(pngs)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            reference = client.post(ROUTE, content=body.content, headers=body.headers).json()
        expected = [p["top_k"][0]["label"] for p in reference["predictions"]]
        truth = digits.test.labels[:IMAGES_PER_REQUEST]
        assert np.mean(np.array(expected, dtype=int) == truth) >= 0.8
        load = Load(server.url, ROUTE, body, expected)
        before = samples(httpx.get(server.url + "/metrics").text)
        result = run_overload(server, load, pngs[0], "/models/gap/classify")
        after = samples(httpx.get(server.url + "/metrics").text)
    finally:
        code = server.stop(timeout=60)

    capacity, overload = result.capacity, result.overload
    print(f"\noverload: {result.summary()}")
    assert capacity.statuses[200] > 0 and set(capacity.statuses) == {200}
    # Every request got an HTTP answer: served correctly, or refused at once with Retry-After.
    assert overload.transport_errors == []
    assert sum(overload.statuses.values()) == min(MAX_REQUESTS, int(result.rate * OVERLOAD_SECONDS))
    assert set(overload.statuses) <= {200, 503, 504}, overload.statuses
    assert overload.statuses[503] > 0  # the queue did fill: this was overload
    assert overload.statuses[200] > 0  # and the server kept serving through it
    assert overload.wrong == 0 and overload.missing_retry_after == 0
    # The model ran every 200's images, at most the 504s' too, and never a refused request's:
    # the capacity phase and the overload phase together, counted by the model's own metric.
    computed = value(after, "convbridge_batch_size_sum", model="gap", version="1") - value(
        before, "convbridge_batch_size_sum", model="gap", version="1"
    )
    ok = capacity.statuses[200] + overload.statuses[200]
    late = overload.statuses[504]
    quiet = len(result.quiet_before) + len(result.quiet_after)  # lone requests, one image each
    assert ok * IMAGES_PER_REQUEST <= computed - quiet <= (ok + late) * IMAGES_PER_REQUEST
    assert value(after, "convbridge_queue_depth", model="gap", version="1") == 0
    # Memory stays bounded: the queue and refused bodies do not pile up.
    assert max(result.rss) - result.rss_before_overload < 200 * 2**20
    assert code == 0
