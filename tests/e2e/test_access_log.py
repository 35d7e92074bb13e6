"""CONVBRIDGE_ACCESS_LOG: convbridge's own access log, in the service's log format, and no
access log at all by default (uvicorn's wrote a plain-text line per request, at a cost of 13%
of a light model's throughput).

Over a real socket, through the split (one front end) and in one process: the classify
shortcut and the router's routes both write their line, errors included.
"""

from __future__ import annotations

import json
import re

import httpx
import pytest

from tests.conftest import start_server
from tests.images import digit_png

pytestmark = [pytest.mark.e2e]

LINE = re.compile(r'127\.0\.0\.1:\d+ "(\w+) (\S+) HTTP/1\.1" (\d{3}) (\d+\.\d\d) ms')


@pytest.fixture(scope="module", params=["1", "0"], ids=["split", "one process"])
def logging_server(request, gap_repository, tmp_path_factory):
    instance = start_server(
        gap_repository,
        tmp_path_factory.mktemp("access") / "server.log",
        CONVBRIDGE_WORKERS=request.param,
        CONVBRIDGE_ACCESS_LOG="true",
        CONVBRIDGE_LOG_FORMAT="json",
    )
    try:
        yield instance.wait_ready()
    finally:
        instance.stop()


def _post_png(client: httpx.Client, path: str, body: bytes) -> int:
    return client.post(path, content=body, headers={"Content-Type": "image/png"}).status_code


def _access_lines(log: str) -> list[tuple[str, str, int, float]]:
    found = []
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry["logger"] == "convbridge.access":
            assert entry["level"] == "info"
            match = LINE.fullmatch(entry["message"])
            assert match is not None, entry["message"]
            found.append((match[1], match[2], int(match[3]), float(match[4])))
    return found


def test_every_request_gets_one_json_line_with_its_status_and_time(logging_server, digits) -> None:
    body = digit_png(digits.test.images[0])
    with httpx.Client(base_url=logging_server.url, timeout=30) as client:
        assert _post_png(client, "/models/gap/classify?top_k=2", body) == 200
        assert client.get("/models").status_code == 200
        assert _post_png(client, "/models/nope/classify", body) == 404
        assert client.get("/healthz").status_code == 200  # the last line is written by now

    lines = _access_lines(logging_server.log())
    requests = [(method, path, status) for method, path, status, _ in lines]
    assert ("POST", "/models/gap/classify?top_k=2", 200) in requests  # the shortcut
    assert ("GET", "/models", 200) in requests  # the router
    assert ("POST", "/models/nope/classify", 404) in requests  # an error answer
    assert all(milliseconds > 0 for *_, milliseconds in lines)
    # uvicorn's own access log stays off: no plain-text request lines beside the JSON ones.
    assert '"POST /models/gap/classify?top_k=2 HTTP/1.1" 200 OK' not in logging_server.log()


def test_the_default_is_no_access_log(server, digits) -> None:
    body = digit_png(digits.test.images[0])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert _post_png(client, "/models/gap/classify?top_k=3", body) == 200
        assert client.get("/healthz").status_code == 200

    log = server.log()
    assert "/models/gap/classify?top_k=3" not in log  # neither convbridge's line nor uvicorn's
    assert "convbridge.access" not in log
