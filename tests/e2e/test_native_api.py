"""The native API over a real socket, checked against the SavedModels called directly."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.images import digit_png, png_files
from tests.numerics import assert_same_float32
from training.variants import VARIANTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def saved_models(demo_repository):
    return {name: tf.saved_model.load(str(demo_repository / name / "1")) for name in VARIANTS}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_held_out_digits_are_classified_like_the_saved_model(
    client, saved_models, digits, name
) -> None:
    count = 100
    images, labels = digits.test.images[:count], digits.test.labels[:count]
    predictions = []
    for start in range(0, count, 50):
        files = png_files([digit_png(image) for image in images[start : start + 50]])
        response = client.post(f"/models/{name}/classify", files=files, params={"top_k": 3})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["model"], body["version"]) == (name, 1)
        predictions += body["predictions"]
    assert len(predictions) == count
    top = np.array([int(p["top_k"][0]["label"]) for p in predictions])
    assert float(np.mean(top == labels)) >= 0.90
    direct = saved_models[name].signatures["serving_default"](images=tf.constant(images))
    expected = direct["probabilities"].numpy()
    for row, prediction in zip(expected, predictions, strict=True):
        scores = [entry["score"] for entry in prediction["top_k"]]
        assert [entry["index"] for entry in prediction["top_k"]] == list(np.argsort(-row)[:3])
        np.testing.assert_allclose(scores, np.sort(row)[::-1][:3], atol=1e-5)
        assert prediction["image"]["model_size"] == [28, 28]


def test_raw_body_and_multipart_agree(client, digits) -> None:
    data = digit_png(digits.test.images[7], scale=5)
    raw = client.post("/models/gmp/classify", content=data, headers={"Content-Type": "image/png"})
    form = client.post("/models/gmp/classify", files=png_files([data]))
    assert raw.status_code == form.status_code == 200
    assert raw.json()["predictions"][0]["top_k"] == form.json()["predictions"][0]["top_k"]
    image = raw.json()["predictions"][0]["image"]
    assert image["original_size"] == [140, 140] and image["resize_filter"] == "bilinear"
    assert "decode;dur=" in raw.headers["server-timing"]


def post_maps(client: httpx.Client, image: np.ndarray, **params: str) -> httpx.Response:
    """Ask global_context for the feature maps of one digit."""
    return client.post(
        "/models/global_context/feature-maps", files=png_files([digit_png(image)]), params=params
    )


@pytest.fixture(scope="module")
def direct_maps(saved_models, digits):
    image = digits.test.images[3]
    outputs = saved_models["global_context"].signatures["feature_maps"](
        images=tf.constant(image[None])
    )
    return image, {name: value.numpy()[0] for name, value in outputs.items()}


def test_npy_is_the_feature_maps_signature(client, direct_maps) -> None:
    image, expected = direct_maps
    response = post_maps(client, image, layers="context", format="npy")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-npy"
    assert_same_float32(np.load(io.BytesIO(response.content)), expected["context"])
    several = post_maps(client, image, format="npy")
    assert several.headers["content-type"] == "application/zip"
    archive = np.load(io.BytesIO(several.content))
    assert sorted(archive.files) == sorted(expected)
    for name, values in expected.items():
        assert_same_float32(archive[name], values)


def test_json_values_and_statistics(client, direct_maps) -> None:
    image, expected = direct_maps
    response = post_maps(client, image, layers="conv1,bridge", channels="0:8")
    assert response.status_code == 200, response.text
    layers = response.json()["layers"]
    assert list(layers) == ["conv1", "bridge"]
    conv1 = layers["conv1"]
    assert conv1["shape"] == [28, 28, 8] and conv1["total_channels"] == 32
    np.testing.assert_allclose(np.array(conv1["values"]), expected["conv1"][..., :8], rtol=1e-6)
    assert conv1["max"] == pytest.approx(float(expected["conv1"][..., :8].max()), rel=1e-6)
    assert conv1["mean"] == pytest.approx(float(expected["conv1"][..., :8].mean()), rel=1e-5)
    np.testing.assert_allclose(layers["bridge"]["values"], expected["bridge"][:8], rtol=1e-6)


@pytest.mark.parametrize("reduce", ["mean", "max", "l2"])
def test_reductions_match_numpy(client, direct_maps, reduce) -> None:
    image, expected = direct_maps
    response = post_maps(client, image, layers="conv3", reduce=reduce, format="npy")
    values = np.load(io.BytesIO(response.content))
    conv3 = expected["conv3"]
    reference = {"mean": conv3.mean(axis=(0, 1)), "max": conv3.max(axis=(0, 1))}
    reference["l2"] = reference["mean"] / np.linalg.norm(reference["mean"])
    np.testing.assert_allclose(values, reference[reduce], rtol=1e-5, atol=1e-7)


def test_png_grid_is_the_npy_answer_in_viridis(client, direct_maps) -> None:
    """The grid rebuilt from the npy answer, the way the README describes it, with
    matplotlib's viridis: each channel scaled to its own range, cells enlarged by the largest
    whole factor that keeps them within 112 px, ceil(sqrt(n)) columns, 2 px gaps under a 20 px
    header line. Compared pixel by pixel."""
    import matplotlib

    image, _ = direct_maps
    values = np.load(
        io.BytesIO(post_maps(client, image, layers="conv1", channels="0:5", format="npy").content)
    )
    picture = np.asarray(
        Image.open(
            io.BytesIO(
                post_maps(client, image, layers="conv1", channels="0:5", format="png").content
            )
        ).convert("RGB")
    )
    height, width, count = values.shape  # 28 x 28, 5 channels
    scale, columns, gap, header = 112 // max(height, width), 3, 2, 20
    viridis = matplotlib.colormaps["viridis"]
    for channel in range(count):
        plane = values[:, :, channel]
        span = plane.max() - plane.min()
        scaled = (plane - plane.min()) / span if span > 0 else np.zeros_like(plane)
        expected = np.round(viridis(np.round(scaled * 255) / 255)[:, :, :3] * 255)
        row, column = divmod(channel, columns)
        top = header + gap + row * (height * scale + gap)
        left = gap + column * (width * scale + gap)
        cell = picture[top : top + height * scale, left : left + width * scale]
        drawn = cell[scale // 2 :: scale, scale // 2 :: scale]  # one pixel per map value
        assert drawn.shape == expected.shape
        np.testing.assert_allclose(drawn, expected, atol=1)
        assert (cell == np.repeat(np.repeat(drawn, scale, 0), scale, 1)).all()  # nearest


def test_png_is_a_grid_of_the_stated_size(client, direct_maps) -> None:
    image, _ = direct_maps
    response = post_maps(client, image, layers="conv1,context_mix", format="png", channels="0:12")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    grids = response.headers["x-feature-grid"].split("; ")
    assert grids[0].startswith("conv1 channels=12") and "grid=4x3" in grids[0]
    sizes = [tuple(int(v) for v in g.rsplit("size=", 1)[1].split("x")) for g in grids]
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (max(w for w, _ in sizes), sum(h for _, h in sizes))
    assert picture.mode == "RGB" and len(picture.getcolors(1 << 20)) > 20  # a colour map, not blank


def test_models_list_what_a_client_needs(client) -> None:
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert sorted(models) == sorted(VARIANTS)
    gap = models["gap"]
    assert gap["served_version"] == 1 and gap["versions"][0]["state"] == "ready"
    assert gap["input"] == {"shape": [28, 28, 1], "dtype": "uint8", "channels": "L"}
    assert gap["classes"] == [str(d) for d in range(10)] and gap["device"] == "/CPU:0"
    assert {"name": "conv3", "shape": [7, 7, 128], "kind": "map"} in gap["layers"]
    assert gap["accuracy"] >= 0.9 and gap["endpoints"]["classify"] == "/models/gap/classify"
    detail = client.get("/models/residual_gap").json()
    assert detail["card"]["variant"] == "residual_gap" and detail["card"]["version"] == 1
    assert client.get("/models/gap", params={"version": 1}).json()["card"]["name"] == "gap"


def test_openapi_documents_every_route(client) -> None:
    spec = client.get("/openapi.json").json()
    for path in (
        "/models",
        "/models/{name}",
        "/models/{name}/classify",
        "/models/{name}/feature-maps",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in spec["paths"], path
    classify = spec["paths"]["/models/{name}/classify"]["post"]
    assert "multipart/form-data" in classify["requestBody"]["content"]
    assert "image/png" in classify["requestBody"]["content"]
    assert classify["responses"]["200"]["content"]["application/json"]["schema"]
    assert "422" in classify["responses"] and "503" in classify["responses"]
    assert "swagger" in client.get("/docs").text.lower()
