"""The app in process (TestClient): failed loads, readiness, on-demand versions, metrics."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.main import create_app
from service.metrics import Metrics
from service.settings import Settings
from tests.images import digit_png, png_files

pytestmark = pytest.mark.slow


def _copy_version(source: Path, target: Path, name: str, version: int) -> None:
    shutil.copytree(source, target)
    card_file = target / "assets.extra" / "model_card.json"
    card = json.loads(card_file.read_text())
    card.update(name=name, version=version)
    card_file.write_text(json.dumps(card))


@pytest.fixture(scope="module")
def mixed_repository(demo_repository: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    _copy_version(demo_repository / "gap" / "1", root / "gap" / "1", "gap", 1)
    _copy_version(demo_repository / "gap" / "1", root / "gap" / "2", "gap", 2)
    _copy_version(demo_repository / "gmp" / "1", root / "broken" / "1", "broken", 1)
    (root / "broken" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    _copy_version(demo_repository / "gmp" / "1", root / "nocard" / "1", "nocard", 1)
    shutil.rmtree(root / "nocard" / "1" / "assets.extra")
    return root


def _wait(client: TestClient, status: int = 200, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        # Settled: every model's newest version has finished loading, one way or the other
        # ("available" means its load has not started yet).
        models = response.json()["models"]
        settled = bool(models) and set(models.values()) <= {"ready", "failed"}
        if response.status_code == status and settled:
            return response.json()
        time.sleep(0.1)  # the interval between two reads of /readyz
    raise AssertionError(f"/readyz never answered {status}: {response.text}")


def test_failed_models_are_reported_and_the_others_serve(mixed_repository, digits) -> None:
    metrics = Metrics(CollectorRegistry())
    app = create_app(Settings(repository=mixed_repository), metrics)
    with TestClient(app) as client:
        ready = _wait(client)
        assert ready["models"] == {"broken": "failed", "gap": "ready", "nocard": "failed"}
        models = {m["name"]: m for m in client.get("/models").json()["models"]}
        assert models["broken"]["versions"][0]["state"] == "failed"
        assert "no model card" in models["nocard"]["versions"][0]["error"]
        assert str(mixed_repository) not in client.get("/models").text  # no server paths
        png = digit_png(digits.test.images[0])
        answer = client.post(
            "/models/gap/classify", content=png, headers={"Content-Type": "image/png"}
        )
        assert answer.status_code == 200 and answer.json()["version"] == 2
        refused = client.post(
            "/models/broken/classify", content=png, headers={"Content-Type": "image/png"}
        )
        assert refused.status_code == 503 and "failed" in refused.json()["error"]
        assert refused.headers["retry-after"] == "2"
    registry = metrics.registry
    assert (
        registry.get_sample_value(
            "convbridge_model_load_failures_total", {"model": "broken", "version": "1"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "convbridge_model_loaded", {"model": "gap", "version": "2", "device": "/CPU:0"}
        )
        == 1
    )
    assert (
        registry.get_sample_value(
            "convbridge_requests_total",
            {
                "model": "broken",
                "endpoint": "classify",
                "outcome": "unavailable",
                "protocol": "rest",
            },
        )
        == 1
    )


def test_strict_readiness_waits_for_every_model(mixed_repository) -> None:
    app = create_app(
        Settings(repository=mixed_repository, require_all_models=True), Metrics(CollectorRegistry())
    )
    with TestClient(app) as client:
        body = _wait(client, status=503)
        assert body["ready"] is False and body["models"]["gap"] == "ready"


def test_older_versions_load_when_a_request_names_them(mixed_repository, digits) -> None:
    app = create_app(Settings(repository=mixed_repository), Metrics(CollectorRegistry()))
    with TestClient(app) as client:
        _wait(client)
        states = {v["version"]: v["state"] for v in client.get("/models/gap").json()["versions"]}
        assert states == {1: "available", 2: "ready"}
        png = digit_png(digits.test.images[0])
        old = client.post(
            "/models/gap/classify",
            params={"version": 1},
            content=png,
            headers={"Content-Type": "image/png"},
        )
        assert old.status_code == 200 and old.json()["version"] == 1
        states = {v["version"]: v["state"] for v in client.get("/models/gap").json()["versions"]}
        assert states == {1: "ready", 2: "ready"}
        assert client.get("/models/gap", params={"version": 1}).json()["card"]["version"] == 1
        # Unversioned requests keep going to the newest version.
        newest = client.post(
            "/models/gap/classify", content=png, headers={"Content-Type": "image/png"}
        )
        assert newest.json()["version"] == 2


def test_padded_batches_answer_exactly_like_the_saved_model(mixed_repository, digits) -> None:
    import numpy as np
    import tensorflow as tf

    settings = Settings(repository=mixed_repository, allowed_batch_sizes=[1, 8, 32])
    images = digits.test.images[:3]
    files = png_files([digit_png(image) for image in images])
    with TestClient(create_app(settings, Metrics(CollectorRegistry()))) as client:
        _wait(client)
        answer = client.post("/models/gap/classify", files=files, params={"top_k": 10})
    assert answer.status_code == 200, answer.text
    direct = tf.saved_model.load(str(mixed_repository / "gap" / "2")).signatures["serving_default"]
    expected = direct(images=tf.constant(images))["probabilities"].numpy()
    for row, prediction in zip(expected, answer.json()["predictions"], strict=True):
        served = np.zeros(10)
        for entry in prediction["top_k"]:
            served[entry["index"]] = entry["score"]
        np.testing.assert_allclose(served, row, atol=1e-5)


def test_a_passed_deadline_answers_504(mixed_repository, digits) -> None:
    # A microsecond passes before the model can run, however fast the machine: 0.5 ms did not
    # (a CI run answered 200: the tiny model's whole request fit in it).
    settings = Settings(repository=mixed_repository, max_delay_ms=0, request_timeout_s=1e-6)
    png = digit_png(digits.test.images[0])
    with TestClient(create_app(settings, Metrics(CollectorRegistry()))) as client:
        _wait(client)
        answer = client.post(
            "/models/gap/classify", content=png, headers={"Content-Type": "image/png"}
        )
    assert answer.status_code == 504
    assert "deadline (1e-06 s, the server's request_timeout_s)" in answer.json()["error"]


def test_a_bad_timeout_header_is_a_400_naming_it(mixed_repository, digits) -> None:
    settings = Settings(repository=mixed_repository)
    png = digit_png(digits.test.images[0])
    values = ["soon", "0", "-5", "nan", "inf", "", "1e999"]
    with TestClient(create_app(settings, Metrics(CollectorRegistry()))) as client:
        _wait(client)
        answers = [
            client.post(
                "/models/gap/classify",
                content=png,
                headers={"Content-Type": "image/png", "X-Request-Timeout-Ms": value},
            )
            for value in values
        ]
        longer = client.post(
            "/models/gap/classify",
            content=png,
            headers={"Content-Type": "image/png", "X-Request-Timeout-Ms": "1e9"},
        )
    for value, answer in zip(values, answers, strict=True):
        assert answer.status_code == 400
        assert answer.json() == {
            "error": "X-Request-Timeout-Ms must be a positive number of milliseconds, "
            f"not {value!r}",
            "header": "X-Request-Timeout-Ms",
        }
    assert longer.status_code == 200  # a longer budget is cut to request_timeout_s, not refused
