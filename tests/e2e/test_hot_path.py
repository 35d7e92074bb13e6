"""The classify shortcut past FastAPI's router answers what the router would, byte for byte.

A query string the shortcut does not read (an encoded key) sends the same request the long way,
so each pair below is one request answered by both paths.
"""

from __future__ import annotations

import pytest

from service.api.hot_path import _query
from tests.images import digit_png
from tests.metrics import samples, value

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", (None, 5)),
        (b"top_k=3", (None, 3)),
        (b"version=1&top_k=1000", (1, 1000)),
        (b"cache=x&top_k=2", (None, 2)),  # unknown keys are ignored, as FastAPI does
        (b"top%5Fk=3", None),  # encoded: the router decodes it
        (b"top_k=3&top_k=4", None),  # repeated
        (b"top_k=03", None),
        (b"top_k=0", None),  # out of range: the router's 422
        (b"top_k=1001", None),
        (b"top_k=", None),
        (b"top_k=%33", None),
        (b"version=0", None),
        (b"version=-1", None),
        (b"version=1234567890123456789", None),  # 19 digits: beyond the shortcut's bound
    ],
)
def test_the_shortcut_reads_only_plain_digits_in_range(raw: bytes, expected) -> None:
    assert _query(raw) == expected


def _comparable(response) -> tuple[int, dict, dict]:
    body = response.json()
    body.pop("timings_ms", None)
    headers = {
        key: value
        for key, value in response.headers.items()
        if key not in ("date", "server-timing", "content-length")
    }
    return response.status_code, body, headers


@pytest.mark.parametrize(
    ("path", "query", "content_type", "data"),
    [
        ("/models/gap/classify", "top_k=3", "image/png", "digit"),
        ("/models/gap/classify", "version=1&top_k=2", "image/png", "digit"),
        ("/models/gap/classify", "top_k=3", "multipart", "digit"),
        ("/models/vgg/classify", "top_k=3", "image/png", "digit"),  # 404, models named
        ("/models/gap/classify", "version=7&top_k=3", "image/png", "digit"),  # 404
        ("/models/gap/classify", "top_k=3", "text/plain", "digit"),  # 415
        ("/models/gap/classify", "top_k=3", "image/png", "empty"),  # 400
        ("/models/gap/classify", "top_k=3", "image/png", "broken"),  # 422
    ],
)
def test_the_shortcut_answers_like_the_router(
    client, digits, path: str, query: str, content_type: str, data: str
) -> None:
    png = digit_png(digits.test.images[0])
    body = {"digit": png, "empty": b"", "broken": png[:40]}[data]
    long_way = query.replace("top_k", "top%5Fk")
    answers = []
    for text in (query, long_way):
        if content_type == "multipart":
            response = client.post(f"{path}?{text}", files=[("images", ("a.png", body))])
        else:
            response = client.post(
                f"{path}?{text}", content=body, headers={"Content-Type": content_type}
            )
        answers.append(_comparable(response))
    assert answers[0] == answers[1]
    assert answers[0][0] != 500


def test_the_shortcut_is_measured_under_the_route_template(client, digits) -> None:
    png = digit_png(digits.test.images[0])
    labels = {"method": "POST", "route": "/models/{name}/classify", "status": "200"}
    name = "convbridge_http_request_duration_seconds_count"
    before = value(samples(client.get("/metrics").text), name, **labels)
    for _ in range(3):
        response = client.post(
            "/models/gap/classify", content=png, headers={"Content-Type": "image/png"}
        )
        assert response.status_code == 200
    after = value(samples(client.get("/metrics").text), name, **labels)
    assert after - before == 3
