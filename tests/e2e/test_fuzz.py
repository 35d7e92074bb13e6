"""Property-based tests over a real socket: odd valid images are classified, broken bytes get
a 4xx with a JSON error on the native and the TF Serving API, and the server never answers 5xx."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings

from tests.strategies import broken_bytes, odd_images

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CLIENT_ERRORS = {400, 413, 415, 422}


def _refused_properly(response, allowed: set[int]) -> None:
    assert response.status_code in allowed, response.text[:500]
    if response.status_code != 200:
        error = response.json()["error"]
        assert error and "Traceback" not in error and "/site-packages/" not in error


@settings(max_examples=40)
@given(odd_images(max_side=200))
def test_odd_valid_images_are_classified(client, case) -> None:
    data, size = case
    response = client.post(
        "/models/gap/classify",
        params={"top_k": 3},
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["image"]["original_size"] == list(size)
    assert len(prediction["top_k"]) == 3
    assert 0.0 <= prediction["top_k"][0]["score"] <= 1.0


@settings(max_examples=60)
@given(broken_bytes())
def test_broken_bytes_get_a_client_error_on_native_and_tfserving(client, data: bytes) -> None:
    native = client.post(
        "/models/gap/classify", content=data, headers={"Content-Type": "image/png"}
    )
    _refused_properly(native, CLIENT_ERRORS | {200})
    b64 = client.post(
        "/v1/models/gap:predict",
        json={"instances": [{"b64": base64.b64encode(data).decode()}]},
    )
    _refused_properly(b64, {200, 400, 413})
    assert (native.status_code == 200) == (b64.status_code == 200)
