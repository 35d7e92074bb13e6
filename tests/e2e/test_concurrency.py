"""Many concurrent requests over a real socket: all correct, and batched together."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families

from tests.images import digit_png

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _batch_histogram(text: str) -> tuple[float, float]:
    """(batches of one image, all batches) of the flatten model so far."""
    ones = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "convbridge_batch_size":
            continue
        for sample in family.samples:
            if sample.labels.get("model") != "flatten":
                continue
            if sample.name.endswith("_bucket") and sample.labels["le"] == "1.0":
                ones = sample.value
            elif sample.name.endswith("_count"):
                total = sample.value
    return ones, total


def test_64_concurrent_requests_are_right_and_share_batches(
    server, demo_repository, digits
) -> None:
    images = digits.test.images[:64]
    bodies = [digit_png(image) for image in images]

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/models/flatten/classify",
                        content=body,
                        headers={"Content-Type": "image/png"},
                        params={"top_k": 1},
                    )
                    for body in bodies
                )
            )

    before = _batch_histogram(httpx.get(f"{server.url}/metrics").text)
    responses = asyncio.run(fire())
    after = _batch_histogram(httpx.get(f"{server.url}/metrics").text)

    assert [r.status_code for r in responses] == [200] * 64
    direct = tf.saved_model.load(str(demo_repository / "flatten" / "1")).signatures[
        "serving_default"
    ]
    expected = direct(images=tf.constant(images))["probabilities"].numpy()
    for response, row in zip(responses, expected, strict=True):
        top = response.json()["predictions"][0]["top_k"][0]
        assert top["index"] == int(np.argmax(row))
        assert top["score"] == pytest.approx(float(row.max()), abs=1e-5)
    batches = after[1] - before[1]
    single = after[0] - before[0]
    assert batches < 64  # 64 requests took fewer model calls than requests
    assert batches - single >= 1  # at least one batch held more than one image


def test_a_lone_request_and_a_crowded_one_get_the_same_answer(server, digits) -> None:
    """On a CPU with two or more cores, a request alone runs on the model's lone copy (its own
    session and pool) and requests in a crowd on the eager signatures: both must answer alike.
    Over a real socket, with the whole probability vector compared."""
    body = digit_png(digits.test.images[5])
    path, params = "/models/flatten/classify", {"top_k": 10}
    headers = {"Content-Type": "image/png"}

    def scores(response: httpx.Response) -> list[float]:
        assert response.status_code == 200, response.text
        top = response.json()["predictions"][0]["top_k"]
        return [entry["score"] for entry in sorted(top, key=lambda entry: entry["index"])]

    lone = scores(httpx.post(server.url + path, content=body, headers=headers, params=params))

    async def crowd() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post(path, content=body, headers=headers, params=params)
                    for _ in range(32)
                )
            )

    crowded = [scores(response) for response in asyncio.run(crowd())]
    for row in crowded:
        assert row == pytest.approx(lone, abs=1e-5)
