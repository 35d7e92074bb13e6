"""Explanations over a real socket: native, TF Serving's :explain and KServe v2's heatmap.

The oracles are independent of the service: the SavedModel's own signatures called directly,
the class activation map recomputed from the Dense weights and the layer's feature maps,
where a moved digit sits, and a model whose weights were never trained.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from convbridge.card import read_card
from tests.conftest import start_server
from tests.images import digit_png, kserve_tensor, png_files
from tests.models import export_untrained, export_without_explain

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
RAW = {"content-type": "image/png"}
VARIANTS = ("flatten", "conv_pool", "gap", "gmp", "residual_gap", "global_context")


def _signature(repository: Path, name: str, signature: str = "explain"):
    return tf.saved_model.load(str(repository / name / "1")).signatures[signature]


def _heatmaps(repository: Path, name: str, images: np.ndarray, classes) -> dict[str, np.ndarray]:
    explain = _signature(repository, name)
    outputs = explain(images=tf.constant(images), class_index=tf.constant(classes, tf.int32))
    return {key: value.numpy() for key, value in outputs.items()}


def _shifted_right(image: np.ndarray, pixels: int) -> np.ndarray:
    """The digit moved ``pixels`` to the right: padded on the left, cropped on the right."""
    moved = np.zeros_like(image)
    moved[:, pixels:] = image[:, :-pixels]
    return moved


def _centre_x(heatmap: np.ndarray) -> float:
    weights = heatmap.sum(axis=0)
    return float((weights * np.arange(len(weights))).sum() / weights.sum())


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (heatmaps are 0 wherever ReLU cut them)."""
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, ranks) / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a.ravel()), _ranks(b.ravel()))[0, 1])


def test_native_formats_agree_with_the_savedmodel(client, demo_repository, digits) -> None:
    image, label = digits.test.images[0], int(digits.test.labels[0])
    expected = _heatmaps(demo_repository, "gap", image[None], [-1])
    body = client.post("/models/gap/explain?format=json", content=digit_png(image), headers=RAW)
    assert body.status_code == 200, body.text
    answer = body.json()
    assert answer["class_index"] == int(expected["class_index"][0]) == label  # top-1, correct
    assert answer["label"] == digits.class_names[label]
    assert answer["layer"] == "conv3" and answer["version"] == 1
    assert answer["score"] == pytest.approx(float(expected["score"][0]), abs=1e-5)
    np.testing.assert_allclose(answer["heatmap"], expected["heatmap"][0], atol=1e-5)
    assert answer["image"]["model_size"] == [28, 28]

    npy = client.post("/models/gap/explain?format=npy", content=digit_png(image), headers=RAW)
    assert npy.headers["content-type"] == "application/x-npy"
    heatmap = np.load(io.BytesIO(npy.content))
    assert heatmap.dtype == np.float32 and heatmap.shape == (28, 28)
    np.testing.assert_allclose(heatmap, expected["heatmap"][0], atol=1e-5)
    assert npy.headers["x-class-index"] == str(label)
    assert npy.headers["x-model-version"] == "1"


def test_png_is_the_overlay_beside_the_heatmap(client, demo_repository, digits) -> None:
    image = digits.test.images[1]
    heatmap = _heatmaps(demo_repository, "gap", image[None], [-1])["heatmap"][0]
    answer = client.post(
        "/models/gap/explain?format=png&alpha=0.5", content=digit_png(image), headers=RAW
    )
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB")).astype(float)
    # Two panels of the 28x28 input side by side under a header line: find them by their
    # pixels, the overlay (heatmap colours and digit) and the heatmap alone.
    scale = 8
    panel = picture.shape[1] // 2
    assert panel >= 28 * scale and picture.shape[0] > 28 * scale
    top = picture.shape[0] - 4 - 28 * scale
    left = picture[top : top + 28 * scale : scale, 4 : 4 + 28 * scale : scale]
    right_start = 4 + 28 * scale + 4
    right = picture[top : top + 28 * scale : scale, right_start : right_start + 28 * scale : scale]
    # Alone: brightness follows the heatmap (viridis rises in luminance); the overlay at
    # alpha 0.5 is half the image and half the alone panel.
    luminance = right @ [0.299, 0.587, 0.114]
    assert spearman(luminance, heatmap) > 0.95
    gray = np.repeat(image.astype(float), 3, axis=2)
    np.testing.assert_allclose(left, 0.5 * gray + 0.5 * right, atol=1.01)


def test_class_by_label_by_index_and_unknown(client, digits) -> None:
    image = digit_png(digits.test.images[2])
    label = digits.class_names[4]
    by_label = client.post(
        f"/models/gap/explain?format=json&class={label}", content=image, headers=RAW
    )
    by_index = client.post(
        "/models/gap/explain?format=json&class=4", files=png_files([image])
    )  # multipart too
    for answer in (by_label, by_index):
        assert answer.status_code == 200, answer.text
        assert answer.json()["class_index"] == 4 and answer.json()["label"] == label
    assert by_label.json()["heatmap"] == by_index.json()["heatmap"]
    unknown = client.post("/models/gap/explain?class=giraffe", content=image, headers=RAW)
    assert unknown.status_code == 422
    assert unknown.json()["valid_classes"] == list(digits.class_names)
    assert "giraffe" in unknown.json()["error"]
    assert (
        client.post("/models/gap/explain?class=10", content=image, headers=RAW).status_code == 422
    )
    two = client.post("/models/gap/explain", files=png_files([image, image]))
    assert two.status_code == 422 and "exactly one image" in two.json()["error"]
    assert client.post("/models/nope/explain", content=image, headers=RAW).status_code == 404
    assert client.post("/models/gap/explain", content=b"not a png", headers=RAW).status_code in (
        400,
        415,
        422,
    )


@pytest.mark.parametrize("variant", ["gap", "residual_gap"])
def test_grad_cam_equals_cam_for_a_gap_head(client, demo_repository, digits, variant) -> None:
    """CAM the original way (Zhou et al.): the class's Dense weights times the layer's maps,
    here from the feature_maps signature and the SavedModel's variables, not from explain."""
    card = read_card(demo_repository / variant / "1")
    images = digits.test.images[:3]
    maps = _signature(demo_repository, variant, "feature_maps")(images=tf.constant(images))
    layer = maps[card.explain_layer].numpy()
    model = tf.saved_model.load(str(demo_repository / variant / "1"))
    kernel = next(v for v in model.variables if v.name.startswith("probabilities/kernel")).numpy()
    for image, feature_maps in zip(images, layer, strict=True):
        answer = client.post(
            f"/models/{variant}/explain?format=json", content=digit_png(image), headers=RAW
        ).json()
        cam = np.maximum(np.einsum("hwk,k->hw", feature_maps, kernel[:, answer["class_index"]]), 0)
        resized = tf.image.resize(cam[None, ..., None], (28, 28), method="bilinear")[0, ..., 0]
        resized = resized.numpy()
        expected = (resized - resized.min()) / (resized.max() - resized.min())
        np.testing.assert_allclose(answer["heatmap"], expected, atol=1e-4)


def test_a_moved_digit_moves_its_heatmap(client, digits) -> None:
    """Digits with no ink in their 6 right-most columns, moved 6 px right: the heatmap's
    centre of mass follows them to the right."""
    chosen = [i for i in range(60) if digits.test.images[i][:, 22:].max() == 0][:8]
    assert len(chosen) == 8
    for index in chosen:
        image = digits.test.images[index]
        label = int(digits.test.labels[index])
        centres = []
        for pixels in (image, _shifted_right(image, 6)):
            answer = client.post(
                f"/models/gap/explain?format=json&class={label}",
                content=digit_png(pixels),
                headers=RAW,
            ).json()
            centres.append(_centre_x(np.asarray(answer["heatmap"])))
        assert centres[1] > centres[0] + 1.0, (index, centres)


def test_every_variant_explains_at_batch_1_and_32(client, digits) -> None:
    images = digits.test.images[:32]
    for variant in VARIANTS:
        rows = client.post(
            f"/v1/models/{variant}:explain",
            json={"instances": images.tolist(), "class_index": -1},
        )
        assert rows.status_code == 200, (variant, rows.text)
        explanations = rows.json()["explanations"]
        assert len(explanations) == 32
        heatmaps = np.asarray([e["heatmap"] for e in explanations])
        assert heatmaps.shape == (32, 28, 28) and heatmaps.min() >= 0 and heatmaps.max() <= 1
        one = client.post(
            f"/models/{variant}/explain?format=json", content=digit_png(images[5]), headers=RAW
        ).json()
        np.testing.assert_allclose(one["heatmap"], heatmaps[5], atol=1e-4)


def test_tfserving_explain(client, demo_repository, digits) -> None:
    images = digits.test.images[:3]
    expected = _heatmaps(demo_repository, "flatten", images, [-1, 2, 7])
    png = base64.b64encode(digit_png(images[1])).decode()
    body = {
        "instances": [
            images[0].tolist(),
            {"images": {"b64": png}, "class_index": 2},
            {"images": images[2].tolist(), "class_index": digits.class_names[7]},
        ]
    }
    answer = client.post("/v1/models/flatten/versions/1:explain", json=body)
    assert answer.status_code == 200, answer.text
    explanations = answer.json()["explanations"]
    assert [e["class_index"] for e in explanations] == expected["class_index"].tolist()
    assert [e["label"] for e in explanations] == [
        digits.class_names[i] for i in expected["class_index"]
    ]
    for explanation, heatmap, score in zip(
        explanations, expected["heatmap"], expected["score"], strict=True
    ):
        np.testing.assert_allclose(explanation["heatmap"], heatmap, atol=1e-5)
        assert explanation["score"] == pytest.approx(float(score), abs=1e-5)
    wrong = client.post(
        "/v1/models/flatten:explain", json={"instances": images[:2].tolist(), "class_index": [1]}
    )
    assert wrong.status_code == 400 and "one per instance" in wrong.json()["error"]
    unknown = client.post(
        "/v1/models/flatten:explain", json={"instances": images[:1].tolist(), "class_index": 99}
    )
    assert unknown.status_code == 400 and unknown.json()["valid_classes"]


def test_tritonclient_asks_for_the_heatmap(server, demo_repository, digits) -> None:
    import tritonclient.http as triton

    images = digits.test.images[:4]
    classes = np.array([-1, 3, 5, -1], dtype=np.int32)
    expected = _heatmaps(demo_repository, "gmp", images, classes)
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    for binary in (True, False):
        tensor = triton.InferInput("images", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(images, binary_data=binary)
        chosen = triton.InferInput("class_index", [4], "INT32")
        chosen.set_data_from_numpy(classes, binary_data=binary)
        outputs = [
            triton.InferRequestedOutput("heatmap", binary_data=binary),
            triton.InferRequestedOutput("probabilities", binary_data=binary),
        ]
        result = client.infer("gmp", [tensor, chosen], outputs=outputs)
        np.testing.assert_allclose(result.as_numpy("heatmap"), expected["heatmap"], atol=1e-5)
        assert result.as_numpy("probabilities").shape == (4, 10)
    # Without class_index: each image's top class.
    tensor = triton.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    top = client.infer("gmp", [tensor], outputs=[triton.InferRequestedOutput("heatmap")])
    expected_top = _heatmaps(demo_repository, "gmp", images, [-1] * 4)["heatmap"]
    np.testing.assert_allclose(top.as_numpy("heatmap"), expected_top, atol=1e-5)
    # Not named in outputs: not computed, not sent.
    plain = client.infer("gmp", [tensor])
    assert plain.as_numpy("heatmap") is None and plain.as_numpy("probabilities") is not None


@pytest.fixture(scope="module")
def odd_models(demo_repository: Path, digits, tmp_path_factory: pytest.TempPathFactory):
    """A server on three models: `gap` as trained; `gap_random`, the same architecture with
    freshly initialised weights (Adebayo et al.'s randomisation check), exported by training/;
    and `gap_old`, the trained `gap` as an export from before the explain signature holds it
    (two signatures, a card without `explain`)."""
    root = tmp_path_factory.mktemp("odd-models")
    shutil.copytree(demo_repository / "gap", root / "gap")
    export_untrained(root, "gap_random", "gap", digits)
    export_without_explain(demo_repository / "gap" / "1", root / "gap_old" / "1", "gap_old")

    instance = start_server(root, tmp_path_factory.mktemp("odd") / "server.log")
    try:
        yield instance.wait_ready()
    finally:
        instance.stop()


def test_randomised_weights_give_an_unrelated_heatmap(odd_models, digits) -> None:
    """Adebayo et al. (2018): a saliency method that depends on the model must change when the
    weights are re-initialised. Rank correlation, trained against random, per digit."""
    correlations = []
    with httpx.Client(base_url=odd_models.url, timeout=60) as client:
        for index in range(12):
            image = digit_png(digits.test.images[index])
            label = int(digits.test.labels[index])
            maps = [
                np.asarray(
                    client.post(
                        f"/models/{name}/explain?format=json&class={label}",
                        content=image,
                        headers=RAW,
                    ).json()["heatmap"]
                )
                for name in ("gap", "gap_random")
            ]
            correlations.append(spearman(*maps))
    assert np.mean(correlations) < 0.4, correlations


def test_an_old_export_gets_422_and_keeps_serving(odd_models, digits) -> None:
    image = digit_png(digits.test.images[0])
    with httpx.Client(base_url=odd_models.url, timeout=60) as client:
        native = client.post("/models/gap_old/explain", content=image, headers=RAW)
        assert native.status_code == 422, native.text
        assert "make models" in native.json()["error"]
        v1 = client.post(
            "/v1/models/gap_old:explain", json={"instances": [digits.test.images[0].tolist()]}
        )
        assert v1.status_code == 422 and "make models" in v1.json()["error"]
        v2 = client.post(
            "/v2/models/gap_old/infer",
            json={
                "inputs": [kserve_tensor(data=digits.test.images[0].ravel().tolist())],
                "outputs": [{"name": "heatmap"}],
            },
        )
        assert v2.status_code == 422 and "make models" in v2.json()["error"]
        assert (
            client.post("/models/gap_old/classify", content=image, headers=RAW).status_code == 200
        )
        assert "explain" not in client.get("/models/gap_old").json()["endpoints"]
        assert client.get("/readyz").status_code == 200
        metadata = client.get("/v1/models/gap_old/metadata").json()
        assert "explain" not in metadata["metadata"]["signature_def"]["signature_def"]
