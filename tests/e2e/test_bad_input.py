"""Bad input on every API over a real socket: each case gets its status and a JSON error that
names the problem; odd but valid images are converted, not refused. (The native API's own
malformed-request table is in test_errors_and_metrics.py.)"""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from PIL import Image

from tests.images import bomb_png, encode, kserve_tensor, odd_image

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _b64(data: bytes) -> dict[str, str]:
    return {"b64": base64.b64encode(data).decode()}


def _infer(*inputs: dict, **fields: object) -> dict:
    return {"json": {"inputs": list(inputs), **fields}}


def _raw(data: bytes, content_type: str = "image/png") -> dict:
    return {"content": data, "headers": {"Content-Type": content_type}}


SIXTEEN_BIT = encode(Image.fromarray(np.full((28, 28), 40000, np.uint16)))
TRUNCATED_JPEG = encode(Image.new("RGB", (64, 64), 9), "JPEG")[:200]
NAN_FP32 = np.full(784, np.nan, np.float32).tobytes()
NAN_HEADER = orjson.dumps(
    {
        "inputs": [
            {
                "name": "images",
                "shape": [1, 28, 28, 1],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(NAN_FP32)},
            }
        ]
    }
)
TOO_BIG = 17 * 1024 * 1024
PREDICT = "/v1/models/gap:predict"
INFER = "/v2/models/gap/infer"
CLASSIFY = "/models/gap/classify"

# (API, what is wrong, method, path, request keyword arguments, status, words in the error)
CASES = [
    ("TF Serving", "empty body", "POST", PREDICT, {"content": b""}, 400, "not valid JSON"),
    ("TF Serving", "malformed JSON", "POST", PREDICT, {"content": b"{"}, 400, "not valid JSON"),
    (
        "TF Serving",
        "NaN literal",
        "POST",
        PREDICT,
        {"content": b'{"instances": [NaN]}'},
        400,
        "not valid JSON",
    ),
    (
        "TF Serving",
        "negative pixel",
        "POST",
        PREDICT,
        {"json": {"instances": [[[-1] * 28] * 28]}},
        400,
        "0..255",
    ),
    (
        "TF Serving",
        "ragged lists",
        "POST",
        PREDICT,
        {"json": {"instances": [[[0] * 28] * 27 + [[0] * 5]]}},
        400,
        "equal length",
    ),
    (
        "TF Serving",
        "65 instances",
        "POST",
        PREDICT,
        {"json": {"instances": [[[0] * 28] * 28] * 65}},
        400,
        "at most 64",
    ),
    (
        "TF Serving",
        "b64 decompression bomb",
        "POST",
        PREDICT,
        {"json": {"instances": [_b64(bomb_png())]}},
        413,
        "36,000,000 pixels",
    ),
    (
        "TF Serving",
        "b64 truncated JPEG",
        "POST",
        PREDICT,
        {"json": {"instances": [_b64(TRUNCATED_JPEG)]}},
        400,
        "could not be decoded",
    ),
    (
        "TF Serving",
        "17 MB body",
        "POST",
        PREDICT,
        {"content": b"[" + b"0," * (TOO_BIG // 2) + b"0]"},
        413,
        "larger than 16,777,216",
    ),
    (
        "TF Serving",
        "unknown model",
        "POST",
        "/v1/models/vgg:predict",
        {"json": {"instances": [[0]]}},
        404,
        "not found",
    ),
    (
        "TF Serving",
        "unknown version",
        "POST",
        "/v1/models/gap/versions/7:predict",
        {"json": {"instances": [[0]]}},
        404,
        "no version 7",
    ),
    (
        "TF Serving",
        "version not a number",
        "POST",
        "/v1/models/gap/versions/x:predict",
        {"json": {"instances": [[0]]}},
        400,
        "positive integer",
    ),
    (
        "TF Serving",
        "name %2e%2e",
        "POST",
        "/v1/models/%2e%2e:predict",
        {"json": {"instances": [[0]]}},
        404,
        "model '..' not found",
    ),
    (
        "TF Serving",
        "absolute path as name",
        "POST",
        "/v1/models/%2Fetc%2Fpasswd:predict",
        {"json": {"instances": [[0]]}},
        404,
        "no route",
    ),
    ("KServe v2", "empty body", "POST", INFER, {"content": b""}, 400, "not valid JSON"),
    ("KServe v2", "malformed JSON", "POST", INFER, {"content": b"{"}, 400, "not valid JSON"),
    (
        "KServe v2",
        "FP32 value 300",
        "POST",
        INFER,
        _infer(kserve_tensor(datatype="FP32", data=[300.0] * 784)),
        400,
        "0..255",
    ),
    (
        "KServe v2",
        "binary FP32 NaN",
        "POST",
        INFER,
        {
            "content": NAN_HEADER + NAN_FP32,
            "headers": {"Inference-Header-Content-Length": str(len(NAN_HEADER))},
        },
        400,
        "finite numbers",
    ),
    (
        "KServe v2",
        "header length not a number",
        "POST",
        INFER,
        {"content": NAN_HEADER + NAN_FP32, "headers": {"Inference-Header-Content-Length": "abc"}},
        400,
        "byte length",
    ),
    (
        "KServe v2",
        "strings as UINT8",
        "POST",
        INFER,
        _infer(kserve_tensor(data=["a"] * 784)),
        400,
        "must be numbers",
    ),
    (
        "KServe v2",
        "shape [-1, ...]",
        "POST",
        INFER,
        _infer(kserve_tensor(shape=[-1, 28, 28, 1])),
        400,
        "must be [batch, 28, 28, 1]",
    ),
    (
        "KServe v2",
        "float in shape",
        "POST",
        INFER,
        _infer(kserve_tensor(shape=[1, 28.0, 28, 1])),
        400,
        "must be [batch, 28, 28, 1]",
    ),
    (
        "KServe v2",
        "65 images",
        "POST",
        INFER,
        _infer(kserve_tensor(shape=[65, 28, 28, 1], data=[0] * 784 * 65)),
        400,
        "at most 64",
    ),
    (
        "KServe v2",
        "classification 'abc'",
        "POST",
        INFER,
        _infer(
            kserve_tensor(),
            outputs=[{"name": "probabilities", "parameters": {"classification": "abc"}}],
        ),
        400,
        "non-negative integer",
    ),
    (
        "KServe v2",
        "parameters a list",
        "POST",
        INFER,
        _infer(kserve_tensor(), parameters=[]),
        400,
        "must be an object",
    ),
    (
        "KServe v2",
        "outputs an object",
        "POST",
        INFER,
        _infer(kserve_tensor(), outputs={"a": 1}),
        400,
        "non-empty list",
    ),
    (
        "KServe v2",
        "unknown signature output",
        "POST",
        INFER,
        _infer(kserve_tensor(), outputs=[{"name": "logits"}]),
        400,
        "unknown output",
    ),
    (
        "KServe v2",
        "17 MB body",
        "POST",
        INFER,
        {"content": b"{" + b" " * TOO_BIG + b"}"},
        413,
        "larger than 16,777,216",
    ),
    (
        "KServe v2",
        "name %2e%2e",
        "POST",
        "/v2/models/%2e%2e/infer",
        _infer(kserve_tensor()),
        404,
        "model '..' not found",
    ),
    (
        "native",
        "name %2e%2e",
        "POST",
        "/models/%2e%2e/classify",
        _raw(SIXTEEN_BIT),
        404,
        "model '..' not found",
    ),
    (
        "native",
        "name ..%2F..%2Fetc",
        "POST",
        "/models/..%2F..%2Fetc/classify",
        _raw(SIXTEEN_BIT),
        404,
        "no route",
    ),
    (
        "native",
        "absolute path as name",
        "POST",
        "/models/%2Fetc%2Fpasswd/classify",
        _raw(SIXTEEN_BIT),
        404,
        "no route",
    ),
    (
        "native",
        "NUL in name",
        "POST",
        "/models/gap%00/classify",
        _raw(SIXTEEN_BIT),
        404,
        "not found",
    ),
    (
        "native",
        "layer '../conv1'",
        "POST",
        "/models/gap/feature-maps?layers=../conv1",
        _raw(SIXTEEN_BIT),
        422,
        "valid layers",
    ),
    (
        "native",
        "multipart without boundary",
        "POST",
        CLASSIFY,
        _raw(b"xx", "multipart/form-data"),
        400,
        "multipart body is malformed",
    ),
    (
        "native",
        "SVG",
        "POST",
        CLASSIFY,
        _raw(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        415,
        "not supported",
    ),
    (
        "native",
        "SVG sent as PNG",
        "POST",
        CLASSIFY,
        _raw(b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        415,
        "not an image in a supported format",
    ),
    (
        "native",
        "truncated JPEG",
        "POST",
        CLASSIFY,
        _raw(TRUNCATED_JPEG, "image/jpeg"),
        422,
        "could not be decoded",
    ),
    (
        "native",
        "JSON sent to classify",
        "POST",
        CLASSIFY,
        {"json": {"a": 1}},
        415,
        "application/json",
    ),
    (
        "native",
        "version 'abc'",
        "POST",
        CLASSIFY + "?version=abc",
        _raw(SIXTEEN_BIT),
        422,
        "version",
    ),
    (
        "native",
        "deadline header 'soon'",
        "POST",
        CLASSIFY,
        {
            "content": SIXTEEN_BIT,
            "headers": {"Content-Type": "image/png", "X-Request-Timeout-Ms": "soon"},
        },
        400,
        "X-Request-Timeout-Ms",
    ),
]


def test_every_bad_input_gets_its_status_and_a_json_error(client) -> None:
    failures = []
    for api, what, method, path, kwargs, status, words in CASES:
        response = client.request(method, path, **kwargs)
        try:
            error = response.json().get("error", "")
        except ValueError:
            error = ""
        leaked = "Traceback" in response.text or "/site-packages/" in response.text
        if response.status_code != status or words not in error or leaked:
            failures.append((api, what, response.status_code, response.text[:300]))
    assert failures == []
    assert client.get("/readyz").status_code == 200


# Odd but valid images: converted on every API that takes image files, never refused.
CONVERTED = [
    ("16-bit grayscale PNG", odd_image("PNG", "I;16", 40, 30, seed=1)),
    ("CMYK JPEG", odd_image("JPEG", "CMYK", 40, 30, seed=2)),
    ("palette PNG", odd_image("PNG", "P", 40, 30, seed=3)),
    ("RGBA PNG", odd_image("PNG", "RGBA", 40, 30, seed=4)),
    ("LA PNG", odd_image("PNG", "LA", 40, 30, seed=5)),
    ("animated GIF, 3 frames", odd_image("GIF", "P", 40, 30, seed=6, frames=3)),
    ("32-bit float TIFF", odd_image("TIFF", "F", 40, 30, seed=7)),
    ("1-bit BMP", odd_image("BMP", "1", 40, 30, seed=8)),
    ("EXIF-rotated WEBP", odd_image("WEBP", "RGB", 40, 30, seed=9, orientation=6)),
]


@pytest.mark.parametrize(("what", "data"), CONVERTED, ids=[what for what, _ in CONVERTED])
def test_odd_images_are_converted_on_native_and_tfserving(client, what, data) -> None:
    native = client.post(CLASSIFY, content=data, headers={"Content-Type": "image/png"})
    assert native.status_code == 200, native.text
    image = native.json()["predictions"][0]["image"]
    assert image["model_size"] == [28, 28]
    b64 = client.post(PREDICT, json={"instances": [_b64(data)]})
    assert b64.status_code == 200, b64.text
    native_scores = {s["index"]: s["score"] for s in native.json()["predictions"][0]["top_k"]}
    for index, score in native_scores.items():
        assert abs(b64.json()["predictions"][0][index] - score) < 1e-5
