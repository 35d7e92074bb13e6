"""README claims that had no test: each checked over a real socket against `python -m service`.

- two versions with different weights, told apart by answers and `X-Model-Version`, under
  eight concurrent clients; `X-Model-Version` on every inference route;
- `/readyz`'s 503 carries `Retry-After`; TF Serving's END state for a version that failed;
- non-default limits (`MAX_BODY_BYTES`, `MAX_IMAGE_PIXELS`, `MAX_IMAGES_PER_REQUEST`);
- `KEEP_VERSIONS` > 1 and `PINNED_VERSIONS`, with TF Serving's START and LOADING states;
- raw bodies in every image format; KServe without `outputs`, and FP32 pixels rounded.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from benchmarks.servers import ServerProcess
from tests.conftest import start_server
from tests.images import digit_png, encode, kserve_tensor, png_files
from tests.models import broken_copy, copy_version, export_untrained

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
RAW = {"Content-Type": "image/png"}


def _settled(server: ServerProcess, check, timeout: float = 120) -> dict:
    """Poll /models until ``check(models by name)`` holds; the server's own state, no sleeps."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        models = {
            m["name"]: m for m in httpx.get(f"{server.url}/models", timeout=10).json()["models"]
        }
        if check(models):
            return models
        time.sleep(0.05)  # polling interval of a state read, not a wait for something to happen
    raise AssertionError(f"the server never reached the state: {models}")


def _states(models: dict, name: str) -> dict[int, str]:
    return {v["version"]: v["state"] for v in models[name]["versions"]}


@pytest.fixture(scope="module")
def strict(demo_repository, digits, tmp_path_factory):
    """`gap` v1 (trained) and v2 (re-initialised), a `broken` model, every model required,
    and small limits."""
    root = tmp_path_factory.mktemp("claims")
    copy_version(demo_repository / "gap" / "1", root / "gap" / "1", "gap", 1)
    export_untrained(root, "gap", "gap", digits)  # version 2
    broken_copy(demo_repository / "gmp" / "1", root / "broken" / "1", "broken")
    instance = ServerProcess(
        "service",
        ["--host", "127.0.0.1"],
        tmp_path_factory.mktemp("strict") / "server.log",
        {
            "CONVBRIDGE_REPOSITORY": str(root),
            "CONVBRIDGE_WORKERS": "1",
            "CONVBRIDGE_REQUIRE_ALL_MODELS": "true",
            "CONVBRIDGE_MAX_BODY_BYTES": "20000",
            "CONVBRIDGE_MAX_IMAGE_PIXELS": "10000",
            "CONVBRIDGE_MAX_IMAGES_PER_REQUEST": "2",
        },
        ready_path="/healthz",
    )
    try:
        instance.wait_ready()
        _settled(
            instance,
            lambda m: _states(m, "gap").get(2) == "ready" and _states(m, "broken") == {1: "failed"},
        )
        yield instance, root
    finally:
        instance.stop()


def test_readyz_says_when_to_retry_and_tfserving_reports_end(strict) -> None:
    server, _ = strict
    ready = httpx.get(f"{server.url}/readyz", timeout=10)
    assert ready.status_code == 503 and ready.headers["retry-after"].isdigit()
    assert ready.json()["models"]["broken"] == "failed"
    status = httpx.get(f"{server.url}/v1/models/broken", timeout=10).json()
    (version,) = status["model_version_status"]
    assert version["state"] == "END" and version["status"]["error_code"] == "UNKNOWN"
    assert version["status"]["error_message"]


def test_two_versions_are_told_apart_under_concurrent_clients(strict, digits) -> None:
    server, root = strict
    images = digits.test.images[:8]
    expected = {
        version: tf.saved_model.load(str(root / "gap" / str(version)))
        .signatures["serving_default"](images=tf.constant(images))["probabilities"]
        .numpy()
        for version in (1, 2)
    }
    assert not np.allclose(expected[1], expected[2], atol=1e-3)  # the weights differ

    def ask(index: int) -> tuple[int, int, list[float]]:
        version = 1 + index % 2
        with httpx.Client(base_url=server.url, timeout=30) as client:
            answer = client.post(
                f"/models/gap/classify?version={version}&top_k=10",
                content=digit_png(images[index % 8]),
                headers=RAW,
            )
        scores = {
            entry["index"]: entry["score"] for entry in answer.json()["predictions"][0]["top_k"]
        }
        return version, int(answer.headers["x-model-version"]), [scores[i] for i in range(10)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(64)))
    for index, (asked, told, scores) in enumerate(answers):
        assert told == asked
        np.testing.assert_allclose(scores, expected[asked][index % 8], atol=1e-5)
    default = httpx.post(
        f"{server.url}/models/gap/classify", content=digit_png(images[0]), headers=RAW
    )
    assert default.headers["x-model-version"] == "2"  # the newest ready version serves


def test_every_inference_route_says_which_version_answered(strict, digits) -> None:
    server, _ = strict
    image = digits.test.images[0]
    png = digit_png(image)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answers = [
            client.post("/models/gap/classify?version=1", content=png, headers=RAW),
            client.post(
                "/models/gap/feature-maps?version=1&layers=conv1", content=png, headers=RAW
            ),
            client.post("/models/gap/explain?version=1&format=npy", content=png, headers=RAW),
            client.post("/v1/models/gap/versions/1:predict", json={"instances": [image.tolist()]}),
            client.post("/v1/models/gap/versions/1:explain", json={"instances": [image.tolist()]}),
            client.post(
                "/v2/models/gap/versions/1/infer",
                json={"inputs": [kserve_tensor(data=image.ravel().tolist())]},
            ),
        ]
    for answer in answers:
        assert answer.status_code == 200, (answer.request.url, answer.text)
        assert answer.headers["x-model-version"] == "1", answer.request.url
        assert "compute;dur=" in answer.headers["server-timing"]


def test_non_default_limits(strict, digits) -> None:
    server, _ = strict
    png = digit_png(digits.test.images[0])
    with httpx.Client(base_url=server.url, timeout=30) as client:
        noise = np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8)
        big_body = client.post(
            "/models/gap/classify", content=encode(Image.fromarray(noise)), headers=RAW
        )
        assert big_body.status_code == 413 and big_body.json()["limit_bytes"] == 20000
        many_pixels = client.post(
            "/models/gap/classify", content=encode(Image.new("L", (101, 100))), headers=RAW
        )
        assert many_pixels.status_code == 413 and "10,000" in many_pixels.json()["error"]
        three = client.post("/models/gap/classify", files=png_files([png] * 3))
        assert three.status_code == 413 and "2" in three.json()["error"]
        two = client.post("/models/gap/classify", files=png_files([png] * 2))
        assert two.status_code == 200 and len(two.json()["predictions"]) == 2


@pytest.fixture(scope="module")
def versions(demo_repository, tmp_path_factory):
    """Three versions of `gap` and `gmp`, two kept, `gap` v1 pinned, the repository polled."""
    root = tmp_path_factory.mktemp("versions")
    for name in ("gap", "gmp"):
        for number in (1, 2, 3):
            copy_version(demo_repository / name / "1", root / name / str(number), name, number)
    instance = start_server(
        root,
        tmp_path_factory.mktemp("kept") / "server.log",
        CONVBRIDGE_WORKERS="1",
        CONVBRIDGE_KEEP_VERSIONS="2",
        CONVBRIDGE_PINNED_VERSIONS='{"gap": [1]}',
        CONVBRIDGE_POLL_INTERVAL_S="0.3",
    )
    try:
        yield instance.wait_ready()
    finally:
        instance.stop()


def test_kept_and_pinned_versions_with_tfserving_states(versions, digits) -> None:
    server = versions
    status = httpx.get(f"{server.url}/v1/models/gmp", timeout=10).json()["model_version_status"]
    # Only the newest loads at start; older versions are on disk: START.
    assert {s["version"]: s["state"] for s in status} == {
        "3": "AVAILABLE",
        "2": "START",
        "1": "START",
    }

    # Asking for an old version loads it on demand; its status passes through LOADING.
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            while not done.is_set():
                (state,) = client.get("/v1/models/gmp/versions/1").json()["model_version_status"]
                seen.add(state["state"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    png = digit_png(digits.test.images[0])
    try:
        first = httpx.post(f"{server.url}/models/gmp/classify?version=1", content=png, headers=RAW)
    finally:
        done.set()
        watcher.join()
    assert first.status_code == 200 and first.headers["x-model-version"] == "1"
    assert "LOADING" in seen, seen
    for name, number in (("gmp", 2), ("gap", 1), ("gap", 2)):
        answer = httpx.post(
            f"{server.url}/models/{name}/classify?version={number}", content=png, headers=RAW
        )
        assert answer.headers["x-model-version"] == str(number)

    # The policy, applied by the next scans: two newest ready versions kept, pinned ones too.
    models = _settled(server, lambda m: _states(m, "gmp")[1] != "ready")
    assert _states(models, "gmp") == {1: "available", 2: "ready", 3: "ready"}
    assert _states(models, "gap") == {1: "ready", 2: "ready", 3: "ready"}  # v1 is pinned


def test_every_image_format_as_a_raw_body(client, digits) -> None:
    image = Image.fromarray(digits.test.images[2][:, :, 0])
    reference = client.post("/models/gap/classify?top_k=10", content=encode(image), headers=RAW)
    expected = reference.json()["predictions"][0]["top_k"]
    bodies = {
        "image/jpeg": ("JPEG", encode(image, "JPEG", quality=95)),
        "image/webp": ("WEBP", encode(image, "WEBP", lossless=True)),
        "image/bmp": ("BMP", encode(image, "BMP")),
        "image/gif": ("GIF", encode(image, "GIF")),
        "image/tiff": ("TIFF", encode(image, "TIFF")),
    }
    for media, (name, body) in bodies.items():
        answer = client.post(
            "/models/gap/classify?top_k=10", content=body, headers={"Content-Type": media}
        )
        assert answer.status_code == 200, (media, answer.text)
        prediction = answer.json()["predictions"][0]
        assert prediction["image"]["format"] == name
        if name == "JPEG":  # lossy: the same verdict
            assert prediction["top_k"][0]["index"] == expected[0]["index"]
        else:  # lossless: the same pixels, the same scores
            assert prediction["top_k"] == expected


def test_kserve_without_outputs_and_with_fp32_pixels(client, digits) -> None:
    image = digits.test.images[3]
    tensor = {"name": "images", "shape": [1, 28, 28, 1], "datatype": "UINT8"}
    whole = client.post(
        "/v2/models/gap/infer", json={"inputs": [{**tensor, "data": image.ravel().tolist()}]}
    )
    names = [output["name"] for output in whole.json()["outputs"]]
    layers = [layer["name"] for layer in client.get("/models/gap").json()["layers"]]
    assert names == ["probabilities", *layers]  # all outputs but the heatmap (named only)
    # FP32 pixels are rounded to the nearest level: 12.4 is 12, 12.6 is 13.
    nudged = image.astype(np.float64) + np.where(image < 255, 0.4, -0.4)
    fp32 = client.post(
        "/v2/models/gap/infer",
        json={
            "inputs": [{**tensor, "datatype": "FP32", "data": nudged.ravel().tolist()}],
            "outputs": [{"name": "probabilities"}],
        },
    )
    assert fp32.status_code == 200, fp32.text
    assert fp32.json()["outputs"][0]["data"] == whole.json()["outputs"][0]["data"]
