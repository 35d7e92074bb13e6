"""Malformed requests get a 4xx JSON error; metrics move by exactly what was sent."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.images import bomb_png, digit_png, encode, png_files
from tests.metrics import samples, value

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def png(digits) -> bytes:
    return digit_png(digits.test.images[0])


def _cases(png: bytes):
    from PIL import Image

    truncated = encode(Image.effect_noise((64, 64), 80))[:-300]
    return [
        # (method, path, params, request kwargs, status, words the error must contain)
        (
            "POST",
            "/models/vgg/classify",
            {},
            {"files": png_files([png])},
            404,
            "available models: conv_pool",
        ),
        (
            "POST",
            "/models/gap/classify",
            {"version": 9},
            {"files": png_files([png])},
            404,
            "versions: [1]",
        ),
        (
            "POST",
            "/models/gap/classify",
            {"version": 0},
            {"files": png_files([png])},
            422,
            "version",
        ),
        (
            "POST",
            "/models/gap/classify",
            {"top_k": "many"},
            {"files": png_files([png])},
            422,
            "top_k",
        ),
        ("POST", "/models/gap/classify", {"top_k": 0}, {"files": png_files([png])}, 422, "top_k"),
        ("POST", "/models/gap/classify", {}, {"content": png}, 415, "no Content-Type"),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"content": png, "headers": {"Content-Type": "text/plain"}},
            415,
            "'text/plain' is not supported",
        ),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"content": b"", "headers": {"Content-Type": "image/png"}},
            400,
            "body is empty",
        ),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"content": b"hello", "headers": {"Content-Type": "image/png"}},
            415,
            "not an image",
        ),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"files": png_files([truncated])},
            422,
            "could not be decoded",
        ),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"files": png_files([bomb_png()])},
            413,
            "36,000,000 pixels",
        ),
        ("POST", "/models/gap/classify", {}, {"files": png_files([png] * 65)}, 413, "at most 64"),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"files": [("pictures", ("a.png", png, "image/png"))]},
            422,
            "no 'images' field",
        ),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"data": {"images": "not a file"}, "files": [("other", ("a.png", png, "image/png"))]},
            422,
            "must be a file part",
        ),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"content": b"--x\r\nbroken", "headers": {"Content-Type": "multipart/form-data"}},
            400,
            "multipart body is malformed",
        ),
        (
            "POST",
            "/models/gap/classify",
            {},
            {"content": b"\0" * (17 * 1024 * 1024), "headers": {"Content-Type": "image/png"}},
            413,
            "larger than 16,777,216 bytes",
        ),
        (
            "POST",
            "/models/gap/feature-maps",
            {"layers": "conv9"},
            {"files": png_files([png])},
            422,
            "valid layers: conv1, pool1",
        ),
        (
            "POST",
            "/models/gap/feature-maps",
            {"format": "tiff"},
            {"files": png_files([png])},
            422,
            "format",
        ),
        (
            "POST",
            "/models/gap/feature-maps",
            {"reduce": "sum"},
            {"files": png_files([png])},
            422,
            "reduce",
        ),
        (
            "POST",
            "/models/gap/feature-maps",
            {"channels": "40"},
            {"files": png_files([png])},
            422,
            "channels 0 to 31",
        ),
        (
            "POST",
            "/models/gap/feature-maps",
            {"channels": "x"},
            {"files": png_files([png])},
            422,
            "not understood",
        ),
        (
            "POST",
            "/models/gap/feature-maps",
            {},
            {"files": png_files([png, png])},
            422,
            "exactly one image",
        ),
        ("GET", "/models/gap/classify", {}, {}, 405, "not allowed"),
        ("GET", "/nowhere", {}, {}, 404, "no route /nowhere"),
        ("GET", "/models/..%2F..%2Fetc", {}, {}, 404, ""),
    ]


def test_every_malformed_request_gets_its_4xx_and_a_json_error(client, png) -> None:
    failures = []
    for method, path, params, kwargs, status, words in _cases(png):
        response = client.request(method, path, params=params, **kwargs)
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        error = body.get("error", "")
        if response.status_code != status or words not in error or "Traceback" in response.text:
            failures.append((method, path, params, response.status_code, response.text[:300]))
    assert failures == []
    # The server is still fine afterwards.
    assert client.get("/healthz").status_code == 200
    assert client.post("/models/gap/classify", files=png_files([png])).status_code == 200


def test_metrics_move_by_the_right_amounts(client, png) -> None:
    before = samples(client.get("/metrics").text)
    requests = 5
    for _ in range(requests):
        assert client.post("/models/gmp/classify", files=png_files([png])).status_code == 200
    assert client.post("/models/gmp/feature-maps", files=png_files([png])).status_code == 200
    assert (
        client.post("/models/gmp/classify", params={"top_k": 0}, files=png_files([png])).status_code
        == 422
    )
    after = samples(client.get("/metrics").text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert (
        delta(
            "convbridge_requests_total",
            model="gmp",
            endpoint="classify",
            outcome="ok",
            protocol="rest",
        )
        == requests
    )
    assert (
        delta(
            "convbridge_requests_total",
            model="gmp",
            endpoint="feature_maps",
            outcome="ok",
            protocol="rest",
        )
        == 1
    )
    for stage in ("decode", "queue", "compute", "encode"):
        assert (
            delta(
                "convbridge_inference_duration_seconds_count", model="gmp", version="1", stage=stage
            )
            == requests + 1
        )
    assert delta("convbridge_batch_size_sum", model="gmp", version="1") == requests + 1
    route = "/models/{name}/classify"
    assert (
        delta(
            "convbridge_http_request_duration_seconds_count",
            method="POST",
            route=route,
            status="200",
        )
        == requests
    )
    assert (
        delta(
            "convbridge_http_request_duration_seconds_count",
            method="POST",
            route=route,
            status="422",
        )
        == 1
    )
    assert value(after, "convbridge_model_loaded", model="gmp", version="1", device="/CPU:0") == 1
    assert value(after, "convbridge_model_load_seconds_count", model="gmp", version="1") == 1
    assert value(after, "convbridge_queue_depth", model="gmp", version="1") == 0


def test_promtool_finds_nothing_to_report(client) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package 'prometheus'); .ci/run installs it")
    text = client.get("/metrics").text
    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""
